"""Forecasts kept as issued (`issued_forecasts`) and their scores against actuals (`forecast_scores`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Table, and_, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite

from sfmlops.adapters.db.tables import forecast_scores, issued_forecasts, sales
from sfmlops.core import columns

COVARIATE_SOURCE = "covariate_source"
# Covariates the forecast assumed (the bundle's defaults) when the frame names no source.
DEFAULT_COVARIATE_SOURCE = "default"
ISSUE_DATE = "issue_date"
MODEL_VERSION = "model_version"
ACTUAL = "actual"
BACKTEST_RMSPE = "backtest_rmspe"
SCORE_COLUMNS = (
    columns.STORE_ID,
    columns.PRODUCT_ID,
    columns.SALES_DATE,
    MODEL_VERSION,
    columns.HORIZON_DAYS,
    ISSUE_DATE,
    ACTUAL,
    *columns.FORECAST_VALUES,
    BACKTEST_RMSPE,
)


def record_issued(
    connection: Connection,
    frame: pd.DataFrame,
    model_version: str,
    issue_date: dt.date,
    issued_by: str,
) -> int:
    """Keep forecasts as issued; a (series, day, version, issue date) already kept stays as it was.

    Args:
        frame: `columns.FORECAST_COLUMNS`, optionally `covariate_source` and `backtest_rmspe`
            (the series' backtest RMSPE in this version) per row; days on or after
            `issue_date` (earlier rows are not forecasts of the future and are skipped).
        issue_date: The day the system took as "today" (the as-of date + 1).
        issued_by: Who issued them: "pipeline" or "api".

    Returns:
        The number of rows offered (kept now or before).
    """
    dates = pd.to_datetime(frame[columns.SALES_DATE]).dt.date
    future = frame[(dates >= issue_date).to_numpy()]
    if future.empty:
        return 0
    sources = (
        future[COVARIATE_SOURCE].astype(str)
        if COVARIATE_SOURCE in future
        else pd.Series(DEFAULT_COVARIATE_SOURCE, index=future.index)
    )
    backtests = (
        future[BACKTEST_RMSPE].astype(float)
        if BACKTEST_RMSPE in future
        else pd.Series(float("nan"), index=future.index)
    )
    target_dates = pd.to_datetime(future[columns.SALES_DATE]).dt.date
    rows = [
        {
            columns.STORE_ID: int(store_id),
            columns.PRODUCT_ID: str(product_id),
            "target_date": target,
            MODEL_VERSION: model_version,
            ISSUE_DATE: issue_date,
            columns.HORIZON_DAYS: (target - issue_date).days + 1,
            **{
                name: float(value)
                for name, value in zip(columns.FORECAST_VALUES, values, strict=True)
            },
            COVARIATE_SOURCE: source,
            BACKTEST_RMSPE: None if pd.isna(backtest) else float(backtest),
            "issued_by": issued_by,
        }
        for (store_id, product_id, *values), target, source, backtest in zip(
            future[[columns.STORE_ID, columns.PRODUCT_ID, *columns.FORECAST_VALUES]].itertuples(
                index=False
            ),
            target_dates,
            sources,
            backtests,
            strict=True,
        )
    ]
    connection.execute(_insert(connection, issued_forecasts).on_conflict_do_nothing(), rows)
    return len(rows)


def score_days(
    connection: Connection, days: Collection[dt.date], store_ids: Collection[int] | None = None
) -> int:
    """Score the forecasts issued for `days` against the actuals stored for them.

    One INSERT ... SELECT: a day's issued forecasts joined with its sales rows; a row scored
    before (a corrected actual) is rescored.

    Args:
        store_ids: Only these stores (e.g. the ones a micro-batch touched); None: all.

    Returns:
        The number of forecasts scored.
    """
    if not days:
        return 0
    issued = issued_forecasts.c
    join = and_(
        sales.c.store_id == issued.store_id,
        sales.c.product_id == issued.product_id,
        sales.c.sales_date == issued.target_date,
    )
    query = (
        select(
            issued.store_id,
            issued.product_id,
            issued.target_date,
            issued.model_version,
            issued.horizon_days,
            issued.issue_date,
            sales.c.sales,
            *[issued[name] for name in columns.FORECAST_VALUES],
            issued.backtest_rmspe,
            literal(dt.datetime.now(dt.UTC), forecast_scores.c.scored_at.type),
        )
        .select_from(issued_forecasts.join(sales, join))
        .where(issued.target_date.in_(sorted(set(days))))
    )
    if store_ids is not None:
        query = query.where(issued.store_id.in_(sorted(set(store_ids))))
    names = [*SCORE_COLUMNS, "scored_at"]
    statement = _insert(connection, forecast_scores).from_select(names, query)
    statement = statement.on_conflict_do_update(
        index_elements=[
            forecast_scores.c[name]
            for name in (
                columns.STORE_ID,
                columns.PRODUCT_ID,
                columns.SALES_DATE,
                MODEL_VERSION,
                columns.HORIZON_DAYS,
            )
        ],
        set_={name: statement.excluded[name] for name in (ACTUAL, "scored_at")},
    )
    return int(connection.execute(statement).rowcount or 0)


def read_scores(
    connection: Connection,
    start: dt.date,
    end: dt.date,
    store_id: int | None = None,
) -> pd.DataFrame:
    """Scored forecasts of the days `start`..`end` (`SCORE_COLUMNS`), of one store when given."""
    scores = forecast_scores.c
    query = select(*[scores[name] for name in SCORE_COLUMNS]).where(
        scores.sales_date >= start, scores.sales_date <= end
    )
    if store_id is not None:
        query = query.where(scores.store_id == store_id)
    frame = pd.DataFrame(connection.execute(query).fetchall(), columns=list(SCORE_COLUMNS))
    frame[columns.SALES_DATE] = pd.to_datetime(frame[columns.SALES_DATE])
    frame[ISSUE_DATE] = pd.to_datetime(frame[ISSUE_DATE])
    return frame


def read_issued(
    connection: Connection, store_id: int, start: dt.date, end: dt.date
) -> pd.DataFrame:
    """One store's forecasts as issued for the days `start`..`end`, with their actual if stored.

    Columns: `store_id`, `product_id`, `date`, `model_version`, `issue_date`, `horizon_days`,
    the forecast values, `covariate_source`, `backtest_rmspe`, `actual` (NaN until the day's
    sales land).
    """
    issued = issued_forecasts.c
    query = (
        select(
            issued.store_id,
            issued.product_id,
            issued.target_date,
            issued.model_version,
            issued.issue_date,
            issued.horizon_days,
            *[issued[name] for name in columns.FORECAST_VALUES],
            issued.covariate_source,
            issued.backtest_rmspe,
            sales.c.sales,
        )
        .select_from(
            issued_forecasts.outerjoin(
                sales,
                and_(
                    sales.c.store_id == issued.store_id,
                    sales.c.product_id == issued.product_id,
                    sales.c.sales_date == issued.target_date,
                ),
            )
        )
        .where(issued.store_id == store_id, issued.target_date >= start, issued.target_date <= end)
        .order_by(issued.product_id, issued.target_date, issued.issue_date)
    )
    names = [
        columns.STORE_ID,
        columns.PRODUCT_ID,
        columns.SALES_DATE,
        MODEL_VERSION,
        ISSUE_DATE,
        columns.HORIZON_DAYS,
        *columns.FORECAST_VALUES,
        COVARIATE_SOURCE,
        BACKTEST_RMSPE,
        ACTUAL,
    ]
    frame = pd.DataFrame(connection.execute(query).fetchall(), columns=names)
    for name in (columns.SALES_DATE, ISSUE_DATE):
        frame[name] = pd.to_datetime(frame[name])
    frame[ACTUAL] = frame[ACTUAL].astype(float)
    return frame


def delete_from(connection: Connection, start: dt.date) -> int:
    """Delete the forecasts issued on or after `start` or for days from `start` on, and the
    scores of those days (a replay's `--reset`); returns the rows deleted."""
    issued = issued_forecasts.c
    deleted = connection.execute(
        issued_forecasts.delete().where(
            (issued.issue_date >= start) | (issued.target_date >= start)
        )
    ).rowcount
    deleted += connection.execute(
        forecast_scores.delete().where(forecast_scores.c.sales_date >= start)
    ).rowcount
    return int(deleted or 0)


def delete_before(connection: Connection, before: dt.date) -> int:
    """Delete the forecasts issued for days before `before` and those days' scores (retention);
    returns the rows deleted."""
    deleted = connection.execute(
        issued_forecasts.delete().where(issued_forecasts.c.target_date < before)
    ).rowcount
    deleted += connection.execute(
        forecast_scores.delete().where(forecast_scores.c.sales_date < before)
    ).rowcount
    return int(deleted or 0)


def latest_scored_date(connection: Connection) -> dt.date | None:
    value = connection.execute(select(func.max(forecast_scores.c.sales_date))).scalar()
    return None if value is None else pd.Timestamp(value).date()


def _insert(connection: Connection, table: Table) -> Any:
    """The dialect's INSERT, which offers ON CONFLICT on both backends."""
    module = postgresql if connection.dialect.name == "postgresql" else sqlite
    return module.insert(table)
