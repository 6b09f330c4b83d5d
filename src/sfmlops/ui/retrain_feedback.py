"""What a planner sees of a retrain: its steps while it runs, then the series before and after.

No Streamlit here: the store page draws these. "Before" is taken when the retrain is
submitted, "after" once the API serves the new version, both from what the API answers
(the champion's backtest of the series, its forecast of the next week).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from sfmlops.ui import responses
from sfmlops.ui.client import ApiClient, ApiError
from sfmlops.ui.wording import counted

WEEK_DAYS = 7  # the forecast horizon compared before and after
StepState = Literal["done", "current", "pending", "failed"]
COMPARISON_COLUMNS = ("", "before", "after", "change")


@dataclass(frozen=True)
class SeriesSnapshot:
    """One series as the API serves it at one moment.

    Attributes:
        version: The champion version serving it; None before any champion.
        model: The series' own champion model (e.g. `gbm`), when the champion covers it.
        backtest_rmspe: Its RMSPE on the last backtest window, as a fraction.
        week_start: The first day of `week_total`.
        week_total: The forecast's sum over the next `WEEK_DAYS` days.
    """

    version: str | None
    model: str | None = None
    backtest_rmspe: float | None = None
    week_start: dt.date | None = None
    week_total: float | None = None


@dataclass(frozen=True)
class RetrainWatch:
    """The retrain this browser session started and follows.

    Attributes:
        before: The series as served when the retrain was submitted.
        submitted_at: When it was submitted (UTC).
    """

    job_id: str
    store_id: int
    product_id: str
    before: SeriesSnapshot
    submitted_at: dt.datetime

    @property
    def previous_version(self) -> str | None:
        return self.before.version


@dataclass(frozen=True)
class RetrainResult:
    """A retrain whose version is served: the series before and after it.

    Attributes:
        seconds: From the submission to the new version served, as this page saw it.
    """

    job_id: str
    store_id: int
    product_id: str
    before: SeriesSnapshot
    after: SeriesSnapshot
    seconds: float


@dataclass(frozen=True)
class RetrainStep:
    label: str
    state: StepState


def take_snapshot(client: ApiClient, store_id: int, product_id: str) -> SeriesSnapshot:
    """The series as the API serves it now; what the API cannot say is left None.

    Never raises: a snapshot is a comparison's side, not worth failing a retrain over.
    """
    try:
        champion = client.champion(store_id, product_id)
    except ApiError:
        return SeriesSnapshot(version=None)
    series = next(
        (s for s in champion.stores if (s.store_id, s.product_id) == (store_id, product_id)),
        None,
    )
    try:
        forecast = client.forecast(store_id, WEEK_DAYS, product_id)
    except ApiError:
        forecast = None
    # A forecast made by another version than the champion read above (a swap in between)
    # is not this snapshot's.
    same_version = forecast is not None and forecast.model_version == champion.version
    return SeriesSnapshot(
        version=champion.version,
        model=series.model if series else None,
        backtest_rmspe=series.rmspe if series else None,
        week_start=forecast.start if forecast and same_version else None,
        week_total=(
            sum(day.yhat for day in forecast.forecast) if forecast and same_version else None
        ),
    )


def retrain_steps(
    job: responses.TrainingJob, serving_version: str | None, store_id: int
) -> list[RetrainStep]:
    """The retrain's steps, from submitted to served, each done, current, pending or failed.

    Args:
        job: The job as the API last reported it.
        serving_version: The champion version the API serves now.
        store_id: The store retrained.
    """
    version = job.model_version
    if job.status == "failed":
        training: StepState = "failed"
    elif job.status == "succeeded":
        training = "done"
    else:
        training = "current"
    if job.status == "running" and job.progress_total:
        train_label = (
            f"Training store {store_id}: {job.progress_done} of "
            f"{counted(job.progress_total, 'series', 'series')} done"
        )
    elif job.status == "queued":
        train_label = f"Training store {store_id}: queued, waiting for the job to start"
    else:
        train_label = f"Training store {store_id}"
    registered: StepState = "done" if version else "pending"
    if version is None:
        served: StepState = "pending"
    elif serving_version == version:
        served = "done"
    else:
        served = "current"
    return [
        RetrainStep(f"Job {job.id[:12]} submitted", "done"),
        RetrainStep(train_label, training),
        RetrainStep(
            f"Version {version} registered" if version else "New version registered", registered
        ),
        RetrainStep(
            f"Version {version} served by the API" if version else "New version served",
            served,
        ),
    ]


def comparison_table(before: SeriesSnapshot, after: SeriesSnapshot) -> pd.DataFrame:
    """Before and after side by side: version, the series' model, backtest RMSPE, next week."""
    week = "Forecast, next 7 days"
    if after.week_start is not None:
        week += f" from {after.week_start:%Y-%m-%d}"
    rows = [
        ("Model version", before.version or "none", after.version or "none", ""),
        ("Model for this series", before.model or "n/a", after.model or "n/a", ""),
        (
            "Backtest RMSPE",
            _percent(before.backtest_rmspe),
            _percent(after.backtest_rmspe),
            _points(before.backtest_rmspe, after.backtest_rmspe),
        ),
        (
            week,
            _amount(before.week_total),
            _amount(after.week_total),
            _relative(before, after),
        ),
    ]
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _amount(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _points(before: float | None, after: float | None) -> str:
    """The change of a rate in percentage points, e.g. "-1.2 pp"."""
    if before is None or after is None:
        return ""
    return f"{(after - before) * 100:+.1f} pp"


def _relative(before: SeriesSnapshot, after: SeriesSnapshot) -> str:
    """The next week's change in percent; nothing when the two weeks are not the same days."""
    if before.week_total is None or after.week_total is None:
        return ""
    if before.week_start != after.week_start:
        return f"other days (before from {before.week_start:%Y-%m-%d})"
    if before.week_total == 0:
        return ""
    return f"{after.week_total / before.week_total - 1:+.1%}"
