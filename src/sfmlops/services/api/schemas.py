"""Request and response bodies of the API (separate from the storage tables)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sfmlops.core import columns as c

MAX_SALES_RECORDS = 50_000


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
                            c.STORE_ID: 1,
                            c.SALES_DATE: "2015-06-14",
                            c.SALES: 5263,
                            c.CUSTOMERS: 555,
                            c.OPEN: 1,
                            c.PROMO: 1,
                            c.STATE_HOLIDAY: "0",
                            c.SCHOOL_HOLIDAY: 0,
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
    latest_sales_date: dt.date | None
    sales_rows: int
    stores: int
    sales_ingested_last_day: int = Field(
        description="Sales rows inserted or changed in the last 24 hours."
    )
    dead_letters_last_day: int
    champion_version: str | None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unavailable"]
    reason: str | None = None
    model_version: str | None = None


class ErrorBody(BaseModel):
    detail: str


class TrainingJobRequest(BaseModel):
    """Which stores to retrain: a list (single-store retrains keep every other store's model) or all."""

    stores: list[int] | None = Field(
        None, min_length=1, max_length=100_000, description="Store ids; omit to train every store."
    )


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


class TrainingJobList(BaseModel):
    jobs: list[TrainingJob]
