"""Realized accuracy: forecasts as issued, scored when the actuals of their days land.

Ingestion calls `score_actuals` after its own transaction has committed, so scoring never
slows or fails an ingest: a scoring error is logged and the next scoring of that day (the
daily DAG's, or `sfmlops accuracy --rescore`) catches up.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from sfmlops.adapters.db import issued_forecasts as records
from sfmlops.adapters.db import training_job_records
from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.core.job_status import JobStatus

log = logging.getLogger("sfmlops.accuracy")

MAX_DAYS = 366
# The per-store daily series: each day against the forecast issued closest to it.
REALIZED_RMSPE = "realized_rmspe"
RATIO = "ratio"
BASELINE_RMSPE = "baseline_rmspe"
SCORED_DAYS = "scored_days"
# A store's realized error is judged over a week (every weekday once, so a weekday the model
# gets wrong every week does not look like a change) and only with enough scored days in it:
# a single day's error is one forecast, far noisier than the backtest it is held against.
WINDOW_DAYS = 7
MIN_SCORED_DAYS = 4


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


def prune(engine: Engine, end: dt.date, keep_days: int) -> tuple[dt.date, int]:
    """Delete the issued forecasts and scores of the days before the `keep_days` days up to
    `end` (the as-of date), in one transaction.

    Returns:
        The first day kept and the rows deleted.
    """
    first_kept = end - dt.timedelta(days=keep_days - 1)
    with engine.begin() as connection:
        return first_kept, records.delete_before(connection, first_kept)


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
        ValueError: `days` outside 1..366, or a window that would start before 0001-01-01.
    """
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, got {days}")
    if end.toordinal() < days:
        raise ValueError(f"{days} days up to {end.isoformat()} would start before 0001-01-01")
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


def trained_versions(connection: Connection) -> dict[int, int]:
    """Per store, the model version of its latest succeeded training job (a full job counts for
    every store: key 0); a store's realized error is judged on that version's forecasts on."""
    versions: dict[int, int] = {}
    for job in training_job_records.list_training_jobs(connection, limit=500):
        if job.status != JobStatus.SUCCEEDED or job.model_version is None:
            continue
        number = int(job.model_version) if job.model_version.isdigit() else 0
        for store_id in job.stores if job.stores is not None else [0]:
            versions[store_id] = max(versions.get(store_id, 0), number)
    return versions


def store_window_errors(
    connection: Connection,
    end: dt.date,
    trained: Mapping[int, int] | None = None,
    window_days: int = WINDOW_DAYS,
    min_days: int = MIN_SCORED_DAYS,
) -> pd.DataFrame:
    """Per store, the realized RMSPE over its scored days in the `window_days` days up to `end`
    against what the store's own backtest and the whole fleet's error lead one to expect.

    Each day counts against the forecast issued closest to it, and only forecasts of the
    store's current model: versions from the one its latest training made on (`trained`, from
    `trained_versions`), so a retrained store starts a fresh window (its cooldown). Stores
    with fewer than `min_days` such days are left out.

    The baseline is the store's backtest RMSPE times the fleet's median realized/backtest
    ratio (at least 1): when every store misses more than its backtest (a season, a holiday the
    model does not know), the model as a whole is off, which a full training fixes; a store is
    stale only when it is off against the rest.

    Returns:
        Columns `store_id`, `scored_days`, `model_version` (latest), `realized_rmspe`,
        `backtest_rmspe`, `baseline_rmspe`, `ratio` (realized / baseline), by store.
    """
    names = [
        columns.STORE_ID,
        SCORED_DAYS,
        records.MODEL_VERSION,
        REALIZED_RMSPE,
        records.BACKTEST_RMSPE,
        BASELINE_RMSPE,
        RATIO,
    ]
    scores = records.read_scores(connection, end - dt.timedelta(days=window_days - 1), end)
    scores = scores[scores[records.ACTUAL].astype(float) > 0]
    if scores.empty:
        return pd.DataFrame(columns=names)
    closest = scores.sort_values([columns.HORIZON_DAYS, records.ISSUE_DATE]).drop_duplicates(
        [columns.STORE_ID, columns.PRODUCT_ID, columns.SALES_DATE], keep="first"
    )
    versions = trained or {}
    since = closest[columns.STORE_ID].map(
        lambda store: max(versions.get(int(store), 0), versions.get(0, 0))
    )
    number = pd.to_numeric(closest[records.MODEL_VERSION], errors="coerce").fillna(0)
    current = closest[(number >= since).to_numpy()]
    actual = current[records.ACTUAL].to_numpy(dtype=float)
    current = current.assign(
        _squared=((current[columns.YHAT].to_numpy(dtype=float) - actual) / actual) ** 2
    ).sort_values(columns.SALES_DATE)
    by_store = (
        current.groupby(columns.STORE_ID, sort=True)
        .agg(
            scored_days=(columns.SALES_DATE, "nunique"),
            model_version=(records.MODEL_VERSION, "last"),
            _squared=("_squared", "mean"),
            backtest_rmspe=(records.BACKTEST_RMSPE, "mean"),
        )
        .reset_index()
    )
    by_store = by_store[by_store[SCORED_DAYS] >= min_days].dropna(subset=[records.BACKTEST_RMSPE])
    if by_store.empty:
        return pd.DataFrame(columns=names)
    by_store[REALIZED_RMSPE] = np.sqrt(by_store.pop("_squared"))
    fleet = max(1.0, float((by_store[REALIZED_RMSPE] / by_store[records.BACKTEST_RMSPE]).median()))
    by_store[BASELINE_RMSPE] = by_store[records.BACKTEST_RMSPE] * fleet
    by_store[RATIO] = by_store[REALIZED_RMSPE] / by_store[BASELINE_RMSPE]
    return by_store[names].reset_index(drop=True)


def store_gauges(connection: Connection, last_scored: dt.date, worst_stores: int) -> pd.DataFrame:
    """What /metrics exports per store when `last_scored` is the latest scored day: the week's
    figures of `store_window_errors` for the `worst_stores` stores furthest above their
    baseline (bounded cardinality).

    Returns:
        Rows of `store_window_errors`, by store id.
    """
    window = store_window_errors(connection, last_scored, trained_versions(connection))
    if window.empty:
        return window
    return window.nlargest(worst_stores, RATIO).sort_values(columns.STORE_ID).reset_index(drop=True)
