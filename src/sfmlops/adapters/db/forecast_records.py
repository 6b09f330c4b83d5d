"""Forecast records: the batch forecasts written into `forecasts` and their reads."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from sqlalchemy import Connection, func, select

from sfmlops.adapters.db.rows import _as_date, _insert
from sfmlops.adapters.db.tables import (
    forecasts,
)
from sfmlops.core import columns


def forecast_days_per_series(
    connection: Connection, model_version: str
) -> dict[tuple[int, str], tuple[int, dt.date | None]]:
    """For one model version: per series, how many distinct days are forecast and the first one."""
    query = (
        select(
            forecasts.c.store_id,
            forecasts.c.product_id,
            func.count(func.distinct(forecasts.c.forecast_date)),
            func.min(forecasts.c.forecast_date),
        )
        .where(forecasts.c.model_version == model_version)
        .group_by(forecasts.c.store_id, forecasts.c.product_id)
    )
    return {
        (int(store_id), str(product)): (int(days), _as_date(first))
        for store_id, product, days, first in connection.execute(query)
    }


FORECAST_VALUE_COLUMNS = columns.FORECAST_VALUES


def write_forecasts(
    connection: Connection, frame: pd.DataFrame, model_version: str, created_at: dt.datetime
) -> int:
    """Store one pipeline run's forecasts (`columns.FORECAST_COLUMNS`) under a model version.

    Rerunning a version's forecasts replaces its rows; all rows get `created_at`, which
    marks them as one run for `latest_forecasts`.
    """
    rows = [
        {
            columns.STORE_ID: int(store_id),
            columns.PRODUCT_ID: str(product_id),
            "forecast_date": pd.Timestamp(day).date(),
            "model_version": model_version,
            "created_at": created_at,
            **{
                name: float(value)
                for name, value in zip(FORECAST_VALUE_COLUMNS, values, strict=True)
            },
        }
        for store_id, product_id, day, *values in frame[
            [columns.STORE_ID, columns.PRODUCT_ID, columns.SALES_DATE, *FORECAST_VALUE_COLUMNS]
        ].itertuples(index=False)
    ]
    if rows:
        statement = _insert(connection, forecasts)
        key = [
            forecasts.c[name]
            for name in (columns.STORE_ID, columns.PRODUCT_ID, "forecast_date", "model_version")
        ]
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=key,
                set_={
                    name: statement.excluded[name]
                    for name in (*FORECAST_VALUE_COLUMNS, "created_at")
                },
            ),
            rows,
        )
    return len(rows)


def latest_forecasts(
    connection: Connection, store_id: int | None = None, product_id: str | None = None
) -> pd.DataFrame:
    """The rows of the most recent pipeline run (of the given series, when filtered).

    Columns: `store_id`, `product_id`, `date`, the `yhat*` columns, `model_version`,
    `created_at`; ordered by series and date. Empty when nothing was forecast yet.
    """
    latest = select(func.max(forecasts.c.created_at))
    query = select(
        forecasts.c.store_id,
        forecasts.c.product_id,
        forecasts.c.forecast_date,
        *[forecasts.c[name] for name in FORECAST_VALUE_COLUMNS],
        forecasts.c.model_version,
        forecasts.c.created_at,
    )
    if store_id is not None:
        query = query.where(forecasts.c.store_id == store_id)
        latest = latest.where(forecasts.c.store_id == store_id)
    if product_id is not None:
        query = query.where(forecasts.c.product_id == product_id)
        latest = latest.where(forecasts.c.product_id == product_id)
    query = query.where(forecasts.c.created_at == latest.scalar_subquery()).order_by(
        forecasts.c.store_id, forecasts.c.product_id, forecasts.c.forecast_date
    )
    names = [
        columns.STORE_ID,
        columns.PRODUCT_ID,
        columns.SALES_DATE,
        *FORECAST_VALUE_COLUMNS,
        "model_version",
        "created_at",
    ]
    frame = pd.DataFrame(connection.execute(query).fetchall(), columns=names)
    frame[columns.SALES_DATE] = pd.to_datetime(frame[columns.SALES_DATE])
    return frame
