"""Drift: stores whose realized error has left their backtest behind, and what to retrain.

A store is stale when, on each of its last `days` scored days, its realized RMSPE (the forecast
issued closest to the day) exceeded `margin` times the backtest RMSPE of the version that issued
it: the rule the alert SfmlopsStoreForecastDegraded applies to the same figures on /metrics.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection

from sfmlops.adapters.db import training_job_records
from sfmlops.core import columns as c
from sfmlops.services import realized_accuracy

DEFAULT_MARGIN = 1.5
DEFAULT_DAYS = 3
# Days looked back for a store's last scored days (closed days are not scored).
LOOKBACK_DAYS = 14


@dataclass(frozen=True)
class StaleStore:
    """A store to retrain and why."""

    store_id: int
    ratios: tuple[float, ...]  # realized / backtest RMSPE, oldest scored day first

    def reason(self) -> str:
        figures = ", ".join(f"{ratio:.1f}x" for ratio in self.ratios)
        return f"store {self.store_id}: realized RMSPE {figures} its backtest"


def stale_stores(
    connection: Connection,
    end: dt.date,
    margin: float = DEFAULT_MARGIN,
    days: int = DEFAULT_DAYS,
) -> list[StaleStore]:
    """Stores stale on the scored days up to `end`, the furthest above their backtest first."""
    daily = realized_accuracy.store_daily_errors(
        connection, end - dt.timedelta(days=LOOKBACK_DAYS - 1), end
    ).dropna(subset=[realized_accuracy.RATIO])
    stale = []
    for store_id in sorted(daily[c.STORE_ID].unique()):
        rows = daily[daily[c.STORE_ID] == store_id]
        last = rows[realized_accuracy.RATIO].tail(days).tolist()
        if len(last) == days and min(last) > margin:
            stale.append(StaleStore(int(store_id), tuple(float(ratio) for ratio in last)))
    return sorted(stale, key=lambda store: -min(store.ratios))


def full_training_running(connection: Connection) -> bool:
    """Whether a job over every store is queued or running (a retrain would race it)."""
    return any(
        job.stores is None and job.status.active
        for job in training_job_records.list_training_jobs(connection, limit=50)
    )
