"""The API's answers as the dashboard reads them (the API's OpenAPI document at `/openapi.json`).

The dashboard is a client of the HTTP contract, not of the server's code: importing the
server's schemas would load FastAPI, Prometheus, SQLAlchemy and MLflow into the dashboard
(about 15 s before the first page), and tie a dashboard image to the API's internals.
Fields the dashboard does not read are ignored, so the API may add fields freely.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel

JobStatus = Literal["queued", "running", "succeeded", "failed"]


class Store(BaseModel):
    store_id: int
    store_type: str | None = None
    assortment: str | None = None
    state: str | None = None


class StoreList(BaseModel):
    stores: list[Store]
    total: int


class SeriesSpan(BaseModel):
    product_id: str
    first_sales_date: dt.date
    last_sales_date: dt.date
    days: int


class StoreDetail(Store):
    series: list[SeriesSpan]


class SalesDay(BaseModel):
    sales_date: dt.date
    sales: float
    open: int


class SalesHistory(BaseModel):
    store_id: int
    product_id: str
    start: dt.date
    end: dt.date
    days: list[SalesDay]


class Status(BaseModel):
    as_of: dt.date | None
    latest_sales_date: dt.date | None
    sales_rows: int
    stores: int
    sales_ingested_last_day: int
    dead_letters_last_day: int
    champion_version: str | None
    # The models a retrain may name; an API from before the field: none offered.
    trainable_models: list[str] = []


class TrainingJob(BaseModel):
    id: str
    status: JobStatus
    stores: list[int] | None
    progress_done: int
    progress_total: int
    created_at: dt.datetime
    finished_at: dt.datetime | None
    model_version: str | None
    error: str | None
    reason: str | None = None  # why it was started, when its starter said


class TrainingJobList(BaseModel):
    jobs: list[TrainingJob]


class ForecastDay(BaseModel):
    date: dt.date
    yhat: float
    yhat_lower: float
    yhat_upper: float
    yhat_lower_95: float
    yhat_upper_95: float
    # The covariates the day's forecast used, and per covariate "caller" or "default".
    covariates: dict[str, int | str] | None = None
    covariate_sources: dict[str, str] | None = None


class SeriesForecast(BaseModel):
    store_id: int
    product_id: str
    model_version: str
    start: dt.date
    days: int
    assumptions: list[str]
    forecast: list[ForecastDay]


class ChampionMetrics(BaseModel):
    rmspe: float | None
    mape: float | None
    bias: float | None
    coverage_80: float | None
    coverage_95: float | None


class SeriesChampion(BaseModel):
    store_id: int
    product_id: str
    model: str
    rmspe: float | None
    rmspe_by_model: dict[str, float | None]


class ChampionModel(BaseModel):
    name: str
    version: str
    run_id: str
    trained_at: dt.datetime
    last_date: dt.date
    metrics: ChampionMetrics
    champion_mix: dict[str, int]
    # Older APIs do not send it.
    backtest_stand_ins: dict[str, str] = {}
    stores: list[SeriesChampion]


class RealizedMetrics(BaseModel):
    """Forecasts as issued against the actuals of their days (open days with sales)."""

    rmspe: float | None
    mape: float | None = None
    days: int  # forecasts scored


class VersionAccuracy(RealizedMetrics):
    model_version: str


class DayAccuracy(RealizedMetrics):
    date: dt.date


class Accuracy(BaseModel):
    start: dt.date
    end: dt.date
    overall: RealizedMetrics
    by_version: list[VersionAccuracy]
    by_day: list[DayAccuracy]


class StaleStore(BaseModel):
    store_id: int
    ratios: list[float]  # realized over baseline RMSPE per evening, oldest first


class StaleStores(BaseModel):
    end: dt.date
    margin: float
    days: int
    stores: list[StaleStore]
