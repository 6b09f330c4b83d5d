"""Realized accuracy: forecasts as issued, scored when the actuals of their days land.

Ingestion calls `score_actuals` after its own transaction has committed, so scoring never
slows or fails an ingest: a scoring error is logged and the next scoring of that day (the
daily DAG's, or `sfmlops accuracy --rescore`) catches up.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from sfmlops.adapters.db import issued_forecasts as records
from sfmlops.core import columns
from sfmlops.core.forecasting import metrics

log = logging.getLogger("sfmlops.accuracy")

MAX_DAYS = 366
# The per-store daily series: each day against the forecast issued closest to it.
REALIZED_RMSPE = "realized_rmspe"
RATIO = "ratio"


def score_actuals(
    engine: Engine, days: Collection[dt.date], store_ids: Collection[int] | None = None
) -> int:
    """Score the forecasts issued for `days` (of `store_ids`, when given) in a transaction of
    its own; call it after the actuals' transaction committed.

    Returns:
        Forecasts scored; 0 when scoring failed (logged: the ingest it follows stands).
    """
    if not days:
        return 0
    try:
        with engine.begin() as connection:
            return records.score_days(connection, days, store_ids)
    except SQLAlchemyError as error:
        log.warning(
            "scoring %d day(s) failed, left for the next scoring: %s",
            len(days),
            str(error).splitlines()[0],
        )
        return 0


def sales_days(frame: pd.DataFrame) -> set[dt.date]:
    """The distinct days of a frame of sales records (`sales_date`)."""
    if frame.empty:
        return set()
    return set(pd.to_datetime(frame[columns.SALES_DATE]).dt.date.unique())


@dataclass(frozen=True)
class RealizedAccuracy:
    """Realized accuracy over the days `start`..`end` (metrics as `metrics.accuracy`).

    Attributes:
        overall: One row of metrics over every scored forecast.
        by_store, by_horizon, by_version, by_day: Metrics per group, the group's key first.
    """

    start: dt.date
    end: dt.date
    overall: dict[str, float]
    by_store: pd.DataFrame
    by_horizon: pd.DataFrame
    by_version: pd.DataFrame
    by_day: pd.DataFrame


def realized_accuracy(
    connection: Connection, end: dt.date, days: int, store_id: int | None = None
) -> RealizedAccuracy:
    """Metrics of the forecasts scored for the `days` days up to `end` (one store when given).

    Raises:
        ValueError: `days` outside 1..366.
    """
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, got {days}")
    start = end - dt.timedelta(days=days - 1)
    scores = records.read_scores(connection, start, end, store_id).rename(
        columns={records.ACTUAL: metrics.ACTUAL}
    )
    return RealizedAccuracy(
        start=start,
        end=end,
        overall=metrics.accuracy(scores),
        by_store=metrics.accuracy_by(scores, [columns.STORE_ID]),
        by_horizon=metrics.accuracy_by(scores, [columns.HORIZON_DAYS]),
        by_version=metrics.accuracy_by(scores, [records.MODEL_VERSION]),
        by_day=metrics.accuracy_by(scores, [columns.SALES_DATE]),
    )


def store_daily_errors(connection: Connection, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Per store and scored day, the realized RMSPE of the forecast issued closest to that day
    against the backtest RMSPE of the version that issued it.

    The closest forecast is the current model's view of the day: a store retrained yesterday is
    judged by its new version's forecasts from today on, not by what older versions said.

    Returns:
        Columns `store_id`, `sales_date`, `model_version`, `realized_rmspe`, `backtest_rmspe`,
        `ratio` (NaN where the backtest is unknown or the store was closed), by store and day.
    """
    scores = records.read_scores(connection, start, end)
    names = [
        columns.STORE_ID,
        columns.SALES_DATE,
        records.MODEL_VERSION,
        REALIZED_RMSPE,
        records.BACKTEST_RMSPE,
        RATIO,
    ]
    if scores.empty:
        return pd.DataFrame(columns=names)
    closest = scores.sort_values(columns.HORIZON_DAYS).drop_duplicates(
        [columns.STORE_ID, columns.PRODUCT_ID, columns.SALES_DATE], keep="first"
    )
    actual = closest[records.ACTUAL].to_numpy(dtype=float)
    sold = actual > 0
    ratio = (closest[columns.YHAT].to_numpy(dtype=float) - actual) / np.where(sold, actual, np.nan)
    closest = closest.assign(_squared=ratio**2)
    daily = (
        closest.groupby([columns.STORE_ID, columns.SALES_DATE], sort=True)
        .agg(
            model_version=(records.MODEL_VERSION, "last"),
            _squared=("_squared", "mean"),
            backtest_rmspe=(records.BACKTEST_RMSPE, "mean"),
        )
        .reset_index()
    )
    daily[REALIZED_RMSPE] = np.sqrt(daily.pop("_squared"))
    daily[RATIO] = daily[REALIZED_RMSPE] / daily[records.BACKTEST_RMSPE]
    return daily[names]


# Days of scores /metrics looks back for each store's latest scored day (a store closed for a
# while keeps its last figure this long).
GAUGE_LOOKBACK_DAYS = 7


def store_gauges(connection: Connection, last_scored: dt.date, worst_stores: int) -> pd.DataFrame:
    """What /metrics exports per store when `last_scored` is the latest scored day: each
    store's latest scored day in the week up to it, for the `worst_stores` stores furthest
    above their backtest (bounded cardinality).

    Returns:
        Rows of `store_daily_errors` (one per store, by store id).
    """
    daily = store_daily_errors(
        connection, last_scored - dt.timedelta(days=GAUGE_LOOKBACK_DAYS - 1), last_scored
    )
    latest = daily.dropna(subset=[RATIO]).groupby(columns.STORE_ID).tail(1)
    return latest.nlargest(worst_stores, RATIO).sort_values(columns.STORE_ID).reset_index(drop=True)
