"""Request and response bodies of the API (separate from the storage tables)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import TypedDict

from sfmlops.core import columns
from sfmlops.core.forecasting.models import DEFAULT_MODELS, MODEL_NAMES, model_set
from sfmlops.services.api.forecast_requests import MAX_REQUEST_DAYS

MAX_SALES_RECORDS = 50_000
MAX_STORE_ID = 2**31 - 1  # the database's store_id is a 32-bit INTEGER


class Store(BaseModel):
    """A store's metadata."""

    store_id: int
    store_type: str | None = None
    assortment: str | None = None
    competition_distance: float | None = Field(
        None, description="Metres to the nearest competitor."
    )
    competition_open_since_month: int | None = None
    competition_open_since_year: int | None = None
    promo2: int = Field(0, description="1 when the store takes part in the continuing Promo2.")
    promo2_since_week: int | None = None
    promo2_since_year: int | None = None
    promo_interval: str | None = Field(
        None, description='Months Promo2 restarts in, e.g. "Jan,Apr,Jul,Oct".'
    )
    state: str | None = Field(None, description="German state code, e.g. HE.")


class StoreList(BaseModel):
    stores: list[Store]
    total: int = Field(description="Stores in the database (the list may be a page of them).")


class SeriesSpan(BaseModel):
    product_id: str
    first_sales_date: dt.date
    last_sales_date: dt.date
    days: int


class StoreDetail(Store):
    series: list[SeriesSpan] = Field(description="The products this store has sales for.")


class SalesDay(BaseModel):
    sales_date: dt.date
    sales: float
    customers: int | None
    open: int
    promo: int
    state_holiday: str
    school_holiday: int


class SalesHistory(BaseModel):
    store_id: int
    product_id: str
    start: dt.date
    end: dt.date
    days: list[SalesDay]


class SalesBatch(BaseModel):
    """Sales records to store. Each record is validated on its own: valid ones are kept."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "records": [
                        {
                            columns.STORE_ID: 1,
                            columns.SALES_DATE: "2015-06-14",
                            columns.SALES: 5263,
                            columns.CUSTOMERS: 555,
                            columns.OPEN: 1,
                            columns.PROMO: 1,
                            columns.STATE_HOLIDAY: "0",
                            columns.SCHOOL_HOLIDAY: 0,
                        }
                    ]
                }
            ]
        }
    )

    records: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_SALES_RECORDS,
        description=(
            "Fields: store_id, sales_date (YYYY-MM-DD), sales, open, promo, state_holiday (0/a/b/c), "
            "school_holiday; optional: product_id (default total), customers, day_of_week (checked)."
        ),
    )


class RejectedRecord(BaseModel):
    index: int = Field(description="Position of the record in the request's list.")
    reason: str


class IngestResponse(BaseModel):
    status: Literal["accepted", "partial", "rejected"]
    accepted: int = Field(description="Records stored (every record not listed in `rejected`).")
    rejected: list[RejectedRecord] = Field(
        description="Records not stored; kept in ingest_dead_letters."
    )


class Status(BaseModel):
    as_of: dt.date | None = Field(description="The date treated as 'today - 1'.")
    latest_sales_date: dt.date | None = Field(
        description="The latest sales date stored (kept by every write: no scan per call)."
    )
    sales_rows: int = Field(
        description="Sales rows stored (kept by every write: no scan per call)."
    )
    stores: int
    sales_ingested_last_day: int = Field(
        description="Sales rows inserted or changed in the last 24 hours."
    )
    dead_letters_last_day: int
    champion_version: str | None
    trainable_models: list[str] = Field(
        description="The models a training job may name (`models`): those this API can serve."
    )


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unavailable"]
    reason: str | None = None
    model_version: str | None = None


class ErrorBody(BaseModel):
    detail: str


class TrainingJobRequest(BaseModel):
    """Which stores to retrain: a list (single-store retrains keep every other store's model) or
    `"all"`. The scope is required: an empty body is refused rather than read as "all".
    `models` chooses the model set; left out, the default set (a retrain: the champion's own)."""

    model_config = ConfigDict(extra="forbid")

    stores: list[int] | Literal["all"] = Field(
        description='Store ids (at most 100,000), or "all" to train every store.'
    )
    reason: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="Why the job is started (kept on the job and its MLflow run).",
    )
    models: list[str] | None = Field(
        None,
        min_length=1,
        max_length=len(MODEL_NAMES),
        description=f"The models to train and pick each series' champion among, from "
        f"{', '.join(MODEL_NAMES)}. Default: {', '.join(DEFAULT_MODELS)} for a full job; a "
        "store retrain chooses among the champion's own models, and adds a per-series model "
        "(prophet) it lacks for those stores only.",
        examples=[["gbm", "seasonal_naive", "prophet"]],
    )

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: list[str] | None) -> list[str] | None:
        return None if models is None else list(model_set(models))

    @field_validator("stores")
    @classmethod
    def _some_stores(cls, stores: list[int] | str) -> list[int] | str:
        if isinstance(stores, list) and not 1 <= len(stores) <= 100_000:
            raise ValueError('give 1 to 100,000 store ids, or "all"')
        return stores

    @property
    def store_ids(self) -> list[int] | None:
        """The stores to train; None for all."""
        return None if self.stores == "all" else self.stores


class TrainingJob(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    runner: str
    runner_job_id: str | None
    stores: list[int] | None = Field(description="The stores trained; null means all.")
    progress_done: int
    progress_total: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    mlflow_run_id: str | None
    model_version: str | None
    error: str | None = Field(
        description="Why the job failed, or the warnings of a job that succeeded."
    )
    reason: str | None = Field(None, description="Why the job was started, when its starter said.")


class TrainingJobList(BaseModel):
    jobs: list[TrainingJob]


class DeadLetter(BaseModel):
    """A rejected record, kept exactly as received with the reason it was refused."""

    id: int
    source: str = Field(description='Where it came from: "api", "kafka" or "file:<name>".')
    payload: str = Field(description="The record as received (JSON text for API and Kafka).")
    reason: str
    kafka_topic: str | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None
    received_at: dt.datetime


class DeadLetterList(BaseModel):
    dead_letters: list[DeadLetter]
    next_before_id: int | None = Field(
        description="Pass as before_id for the next (older) page; null on the last page."
    )


class UsedCovariates(BaseModel):
    """The covariates a forecast day used."""

    open: Literal[0, 1]
    promo: Literal[0, 1]
    state_holiday: Literal["0", "a", "b", "c"]
    school_holiday: Literal[0, 1]


class ForecastDay(BaseModel):
    date: dt.date
    yhat: float = Field(description="Point forecast of sales.")
    yhat_lower: float = Field(description="Lower end of the 80 % prediction interval.")
    yhat_upper: float = Field(description="Upper end of the 80 % prediction interval.")
    yhat_lower_95: float = Field(description="Lower end of the 95 % prediction interval.")
    yhat_upper_95: float = Field(description="Upper end of the 95 % prediction interval.")
    covariates: UsedCovariates | None = Field(
        None, description="The covariates this day's forecast used, derived ones included."
    )
    covariate_sources: dict[str, Literal["caller", "plan", "default"]] | None = Field(
        None,
        description=(
            "Per covariate, where it came from: `caller` (the request), `plan` (the stored plan"
            " of known future covariates, `POST /v1/plan`) or `default` (derived: the state's"
            " public holidays, the store's usual open weekdays and promotion cycle)."
        ),
    )


class SeriesForecast(BaseModel):
    """One series' forecast from the champion being served."""

    store_id: int
    product_id: str
    model_version: str
    start: dt.date
    days: int
    assumptions: list[str] = Field(
        description="Covariates that were not given and what was assumed for them."
    )
    calibrated_until: dt.date = Field(
        description="The last day whose intervals are calibrated: 48 days after the model's "
        "training history. Later days are forecast, but their intervals are not calibrated."
    )
    beyond_calibrated_horizon: bool = Field(
        description="True when any day asked for is after `calibrated_until`."
    )
    forecast: list[ForecastDay]


class ForecastCovariates(TypedDict):
    """What is known about one forecast day; a missing field is assumed (and reported)."""

    # A typed dict, not a model: an every-store request has 7,805 of these, and validating
    # them into dicts costs a third of validating them into model instances.
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    date: dt.date
    open: NotRequired[Literal[0, 1] | None]
    promo: NotRequired[Literal[0, 1] | None]
    state_holiday: NotRequired[
        Annotated[
            Literal["0", "a", "b", "c"] | None,
            Field(description="0 none, a public, b Easter, c Christmas."),
        ]
    ]
    school_holiday: NotRequired[Literal[0, 1] | None]


class SeriesForecastRequest(BaseModel):
    """One series of a batch: `start` and `days`, or explicit `dates` (default: 7 days from the
    day after the as-of date)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    columns.STORE_ID: 1,
                    columns.PRODUCT_ID: "total",
                    "start": "2015-06-14",
                    "days": 7,
                },
                {
                    columns.STORE_ID: 2,
                    "dates": ["2015-06-15", "2015-06-16"],
                    "covariates": [{"date": "2015-06-15", columns.OPEN: 1, columns.PROMO: 1}],
                },
            ]
        },
    )

    store_id: int = Field(ge=0, le=MAX_STORE_ID)
    product_id: str = Field(columns.DEFAULT_PRODUCT, min_length=1, max_length=64)
    start: dt.date | None = None
    days: int | None = Field(None, ge=1, le=MAX_REQUEST_DAYS)
    dates: list[dt.date] | None = Field(None, min_length=1, max_length=MAX_REQUEST_DAYS)
    covariates: list[ForecastCovariates] | None = Field(None, max_length=MAX_REQUEST_DAYS)

    @model_validator(mode="after")
    def _dates_or_start(self) -> SeriesForecastRequest:
        if self.dates is not None and (self.start is not None or self.days is not None):
            raise ValueError("give either start/days or dates, not both")
        return self


class BatchForecast(BaseModel):
    model_version: str
    forecasts: list[SeriesForecast] = Field(description="In the order of the request.")


class PrecomputedForecastDay(ForecastDay):
    store_id: int
    product_id: str


class LatestForecasts(BaseModel):
    """The newest run of the forecast pipeline (`sfmlops pipeline forecast`)."""

    model_version: str
    created_at: dt.datetime
    forecasts: list[PrecomputedForecastDay]


class ChampionMetrics(BaseModel):
    """The champions' backtest figures on the reported window (not used to pick them)."""

    rmspe: float | None
    mape: float | None
    bias: float | None = Field(description="Mean forecast minus actual, in sales units.")
    coverage_80: float | None = Field(
        description="Share of actuals inside the 80 % interval; null when the window's "
        "models had too little history before it to calibrate intervals on."
    )
    coverage_95: float | None = Field(
        description="Share of actuals inside the 95 % interval; null as for coverage_80."
    )


class SeriesChampion(BaseModel):
    store_id: int
    product_id: str
    model: str = Field(description="The model that forecasts this series.")
    rmspe: float | None
    rmspe_by_model: dict[str, float | None]


class ChampionModel(BaseModel):
    name: str
    version: str
    run_id: str
    trained_at: dt.datetime = Field(description="When this version was registered.")
    last_date: dt.date = Field(description="Last day of the training data.")
    metrics: ChampionMetrics
    champion_mix: dict[str, int] = Field(description="Series per model.")
    backtest_stand_ins: dict[str, str] = Field(
        default_factory=dict,
        description="Models whose backtest figures (`metrics`, each store's `rmspe`) are the "
        "errors of a cheaper stand-in fitted in their place in the backtest windows, and what "
        "it is; the model served is the one named after `in place of`.",
    )
    stores: list[SeriesChampion]


class RealizedMetrics(BaseModel):
    """Forecasts as issued against the actuals of their days (open days with sales only)."""

    rmspe: float | None
    mape: float | None
    bias: float | None = Field(description="Mean forecast minus actual, in sales units.")
    coverage_80: float | None = Field(description="Share of actuals inside the 80 % interval.")
    coverage_95: float | None = Field(description="Share of actuals inside the 95 % interval.")
    days: int = Field(description="Forecasts scored (series-days with sales, each horizon).")


class StoreAccuracy(RealizedMetrics):
    store_id: int


class HorizonAccuracy(RealizedMetrics):
    horizon_days: int = Field(description="1: issued on the day itself (the as-of date + 1).")


class VersionAccuracy(RealizedMetrics):
    model_version: str


class DayAccuracy(RealizedMetrics):
    date: dt.date


class Accuracy(BaseModel):
    """Realized accuracy over the days `start`..`end`."""

    start: dt.date
    end: dt.date
    store_id: int | None = Field(description="The store asked for; null: every store.")
    overall: RealizedMetrics
    by_store: list[StoreAccuracy]
    by_horizon: list[HorizonAccuracy]
    by_version: list[VersionAccuracy]
    by_day: list[DayAccuracy]


class StaleStore(BaseModel):
    store_id: int
    ratios: list[float] = Field(
        description="Realized over baseline RMSPE of the store's last week, one per evening, "
        "oldest first."
    )


class StaleStores(BaseModel):
    """Stores whose realized error left their baseline behind (what the daily DAG retrains)."""

    end: dt.date
    margin: float
    days: int
    stores: list[StaleStore] = Field(description="The furthest above their baseline first.")


class PlanDay(BaseModel):
    """One store's known covariates for one future day (the competition's test-file row)."""

    model_config = ConfigDict(extra="forbid")

    store_id: int = Field(ge=0, le=MAX_STORE_ID)
    date: dt.date
    open: Literal[0, 1]
    promo: Literal[0, 1]
    state_holiday: Literal["0", "a", "b", "c"] = Field(
        description="0 none, a public, b Easter, c Christmas."
    )
    school_holiday: Literal[0, 1]


class PlanStored(BaseModel):
    stored: int = Field(description="Store-days written (a day planned again is replaced).")
    stores: int
    first: dt.date
    last: dt.date


class PlannedDay(PlanDay):
    updated_by: str = Field(description="Who last set this day.")
    updated_at: dt.datetime


class StorePlan(BaseModel):
    store_id: int
    days: list[PlannedDay]
