"""Realized accuracy: forecasts as issued, scored against the actuals that landed since."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, HTTPException, Query, status

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.services import drift, realized_accuracy
from sfmlops.services.api import schemas
from sfmlops.services.api.deps import ReadEngineDep, SettingsDep
from sfmlops.services.status import as_of_date

router = APIRouter(tags=["accuracy"])


@router.get(
    "/v1/accuracy",
    response_model=schemas.Accuracy,
    responses={404: {"model": schemas.ErrorBody}},
    summary="Realized accuracy of the forecasts issued, for the last N days up to the as-of date",
)
def get_accuracy(
    engine: ReadEngineDep,
    settings: SettingsDep,
    days: Annotated[
        int, Query(ge=1, le=realized_accuracy.MAX_DAYS, description="Days up to `end`.")
    ] = 28,
    store_id: Annotated[
        int | None, Query(ge=0, le=schemas.MAX_STORE_ID, description="One store (default: all).")
    ] = None,
    end: Annotated[dt.date | None, Query(description="Last day (default: the as-of date).")] = None,
) -> schemas.Accuracy:
    with engine.connect() as connection:
        last = end or as_of_date(settings, connection)
        if last is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no sales in the database yet")
        try:
            report = realized_accuracy.realized_accuracy(connection, last, days, store_id)
        except ValueError as error:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error
    return schemas.Accuracy(
        start=report.start,
        end=report.end,
        store_id=store_id,
        overall=schemas.RealizedMetrics(**_metrics(report.overall)),
        by_store=[
            schemas.StoreAccuracy(store_id=int(row[columns.STORE_ID]), **_metrics(row))
            for row in report.by_store.to_dict("records")
        ],
        by_horizon=[
            schemas.HorizonAccuracy(horizon_days=int(row[columns.HORIZON_DAYS]), **_metrics(row))
            for row in report.by_horizon.to_dict("records")
        ],
        by_version=[
            schemas.VersionAccuracy(model_version=str(row["model_version"]), **_metrics(row))
            for row in report.by_version.to_dict("records")
        ],
        by_day=[
            schemas.DayAccuracy(date=pd.Timestamp(row[columns.SALES_DATE]).date(), **_metrics(row))
            for row in report.by_day.to_dict("records")
        ],
    )


@router.get(
    "/v1/accuracy/stale-stores",
    response_model=schemas.StaleStores,
    responses={404: {"model": schemas.ErrorBody}},
    summary="Stores whose last week's realized RMSPE left their baseline behind",
)
def get_stale_stores(
    engine: ReadEngineDep,
    settings: SettingsDep,
    margin: Annotated[
        float, Query(ge=1.0, le=100.0, description="Realized over baseline RMSPE that is stale.")
    ] = drift.DEFAULT_MARGIN,
    days: Annotated[
        int, Query(ge=1, le=drift.LOOKBACK_DAYS, description="Stale evenings in a row.")
    ] = drift.DEFAULT_DAYS,
) -> schemas.StaleStores:
    with engine.connect() as connection:
        end = as_of_date(settings, connection)
        if end is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no sales in the database yet")
        stale = drift.stale_stores(connection, end, margin, days)
    return schemas.StaleStores(
        end=end,
        margin=margin,
        days=days,
        stores=[
            schemas.StaleStore(store_id=store.store_id, ratios=list(store.ratios))
            for store in stale
        ],
    )


def _metrics(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The reported metrics of one row (NaN, e.g. no open day scored, becomes null)."""
    values: dict[str, Any] = {
        name: None if pd.isna(row[name]) else float(row[name]) for name in metrics.REPORTED
    }
    values["days"] = int(row[metrics.DAYS])
    return values
