"""Replay: time travel over the bundled data through the closed loop, one day at a time.

From a start date, each day: issue the champion's forecasts, ingest that day's actuals through
the ingestion path `POST /v1/sales` uses (which scores them once they are stored), run the
daily ingest check and the stale-store trigger, then advance the as-of date. An injected drift
(one store's sales multiplied from a date on) shows the loop finding and retraining that store.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from sfmlops.adapters import files
from sfmlops.adapters.db import issued_forecasts, sales_records
from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.core.forecasting.models import DEFAULT_MODELS
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services import (
    batch_forecast,
    data_quality,
    drift,
    ingestion,
    loading,
    model_training,
    realized_accuracy,
)
from sfmlops.services.drift import DEFAULT_DAYS, DEFAULT_MARGIN, DEFAULT_MAX_STORES
from sfmlops.settings import Settings

SOURCE = "replay"
SALES_FILE = ROSSMANN_DIR / "train.csv.gz"
STORE_FILES = ("store.csv", "store_states.csv")
# The day each per-store gauge row describes the end of (what /metrics showed that evening).
AS_OF = "as_of"


class ReplayError(ValueError):
    """A replay that cannot start: bad dates, stores or drift, or a database it would spoil."""


@dataclass(frozen=True)
class Drift:
    """One store's actuals multiplied by `factor` from `start` on."""

    store_id: int
    factor: float
    start: dt.date

    @classmethod
    def parse(cls, text: str) -> Drift:
        """Read `STORE:FACTOR:FROM` (e.g. `7:1.6:2015-05-08`).

        Raises:
            ReplayError: Not three fields, or a field that does not parse.
        """
        parts = text.split(":")
        if len(parts) != 3:
            raise ReplayError(
                f"--drift {text!r}: expected STORE:FACTOR:FROM, e.g. 7:1.6:2015-05-08"
            )
        try:
            store_id, factor, start = (
                int(parts[0]),
                float(parts[1]),
                dt.date.fromisoformat(parts[2]),
            )
        except ValueError as error:
            raise ReplayError(f"--drift {text!r}: {error}") from error
        if not (math.isfinite(factor) and factor > 0):
            raise ReplayError(f"--drift {text!r}: the factor must be a positive number")
        return cls(store_id, factor, start)


@dataclass(frozen=True)
class ReplayRequest:
    """What to replay.

    Attributes:
        start: The first day replayed; the history loaded and trained on ends the day before.
        days: Days replayed.
        store_ids: Replay these stores only (default: every store).
        drift: An injected change of one store's sales.
        models, windows: The first training's models and backtest windows.
        margin, stale_days, max_stores: The trigger (`drift.retrain_stale_stores`).
        forecast_days: Days each day's batch forecast covers.
        reset: Delete the sales (and forecasts issued) from `start` on instead of refusing.
    """

    start: dt.date
    days: int
    store_ids: Sequence[int] | None = None
    drift: Drift | None = None
    models: Sequence[str] = DEFAULT_MODELS
    windows: int = 2
    margin: float = DEFAULT_MARGIN
    stale_days: int = DEFAULT_DAYS
    max_stores: int = DEFAULT_MAX_STORES
    forecast_days: int = batch_forecast.DEFAULT_FORECAST_DAYS
    reset: bool = False

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)


@dataclass(frozen=True)
class Retrain:
    """A retrain the trigger ran on `day`."""

    day: dt.date
    version: str
    alias: str
    store_ids: list[int]
    reason: str


@dataclass
class ReplayReport:
    """What a replay did.

    Attributes:
        trained: The first training's version, None when the champion already ended the day
            before `start`.
        by_day: Realized accuracy per replayed day and model version (`metrics.METRICS`).
        store_gauges: Per evening (`as_of`), the per-store rows /metrics exported
            (`realized_accuracy.store_gauges`): what the alert rules saw.
        retrains: The trigger's retrains, in order.
        breaches: Per day, the ingest check's breaches (none expected).
        folder: Where the report's CSV files are.
    """

    start: dt.date
    end: dt.date
    trained: str | None = None
    by_day: pd.DataFrame = field(default_factory=pd.DataFrame)
    store_gauges: pd.DataFrame = field(default_factory=pd.DataFrame)
    retrains: list[Retrain] = field(default_factory=list)
    breaches: dict[dt.date, list[str]] = field(default_factory=dict)
    folder: Path | None = None


Step = Callable[[str], None]


def replay(
    settings: Settings, engine: Engine, request: ReplayRequest, step: Step | None = None
) -> ReplayReport:
    """Replay `request.days` days from `request.start` (see the module's description).

    Args:
        step: Called with a line of what happens (one or two per day).

    Raises:
        ReplayError: Before anything is written: dates outside the bundled data, unknown
            stores, a drift outside the replayed stores, or (without `reset`) a database
            holding sales on or after `start`.
        As `model_training.run_training_job` for the first training and the retrains.
    """
    say = step or (lambda _line: None)
    sales = _bundled_sales(request)
    stores = _bundled_stores(request.store_ids)
    with engine.connect() as connection:
        latest = sales_records.latest_sales_date(connection)
    if latest is not None and latest >= request.start:
        if not request.reset:
            raise ReplayError(
                f"the database holds sales up to {latest}, on or after the replay's start "
                f"{request.start}: use --reset to delete them (and the forecasts issued from "
                "then on), or a fresh SFMLOPS_HOME"
            )
        with engine.begin() as connection:
            deleted = sales_records.delete_sales_from(connection, request.start)
            issued_forecasts.delete_from(connection, request.start)
        say(f"reset: deleted {deleted:,} sales rows from {request.start} on")
        latest = request.start - dt.timedelta(days=1)

    report = ReplayReport(start=request.start, end=request.end)
    history = sales[sales[columns.SALES_DATE] < request.start.isoformat()]
    if latest is None or latest < request.start - dt.timedelta(days=1):
        written = _load_history(engine, history, stores)
        say(f"loaded {written:,} sales rows up to {request.start - dt.timedelta(days=1)}")
    report.trained = _train_if_needed(settings, engine, request, say)

    limits = ingestion.sales_limits(settings)
    checked_since = dt.datetime.now(dt.UTC)
    gauges = []
    for offset in range(request.days):
        day = request.start + dt.timedelta(days=offset)
        today = settings.model_copy(update={"as_of": day - dt.timedelta(days=1)})
        issued = batch_forecast.forecast_next_days(
            today, engine, request.forecast_days, plan=_plan_of(sales, day, request.forecast_days)
        )
        actuals = _actuals_of(sales, day, request.drift)
        result = ingestion.ingest_records(engine, actuals, SOURCE, limits)
        with engine.connect() as connection:
            check = data_quality.ingest_report(connection, day, checked_since)
            report.breaches[day] = data_quality.ingest_breaches(
                check, data_quality.IngestThresholds()
            )
            evening = realized_accuracy.store_gauges(connection, day, settings.metrics_worst_stores)
        checked_since = dt.datetime.now(dt.UTC)
        gauges.append(evening.assign(**{AS_OF: pd.Timestamp(day)}))
        say(
            f"{day}: issued {issued.rows:,} forecasts with version {issued.model_version}, "
            f"ingested {result.accepted:,} actuals ({len(result.rejected)} rejected)"
            + "".join(f"; check: {breach}" for breach in report.breaches[day])
        )
        stale = drift.retrain_stale_stores(
            settings.model_copy(update={"as_of": day}),
            engine,
            day,
            request.margin,
            request.stale_days,
            request.max_stores,
        )
        if stale.outcome is not None:
            retrain = Retrain(
                day=day,
                version=stale.outcome.version,
                alias=stale.outcome.alias,
                store_ids=stale.retrained,
                reason=stale.reason,
            )
            report.retrains.append(retrain)
            say(f"{day}: retrained stores {_ids(retrain.store_ids)} as version {retrain.version}")

    with engine.connect() as connection:
        scores = issued_forecasts.read_scores(connection, request.start, request.end).rename(
            columns={issued_forecasts.ACTUAL: metrics.ACTUAL}
        )
    report.by_day = metrics.accuracy_by(
        scores, [columns.SALES_DATE, issued_forecasts.MODEL_VERSION]
    )
    report.store_gauges = pd.concat(gauges, ignore_index=True) if gauges else pd.DataFrame()
    report.folder = _write_report(settings, report)
    return report


def _bundled_sales(request: ReplayRequest) -> pd.DataFrame:
    """The bundled sales of the replayed stores up to the replay's last day, as text."""
    if not 1 <= request.days <= realized_accuracy.MAX_DAYS:
        raise ReplayError(f"--days must be between 1 and {realized_accuracy.MAX_DAYS}")
    sales = files.read_csv_as_text(SALES_FILE, columns.ROSSMANN_SALES_COLUMNS)
    first, last = sales[columns.SALES_DATE].min(), sales[columns.SALES_DATE].max()
    if request.start.isoformat() <= first or request.end.isoformat() > last:
        raise ReplayError(
            f"the replay {request.start}..{request.end} must lie inside the bundled data "
            f"({first}..{last}), after its first day"
        )
    known = set(sales[columns.STORE_ID].astype(int))
    wanted = set(request.store_ids) if request.store_ids is not None else known
    unknown = sorted(wanted - known)
    if unknown:
        raise ReplayError(f"--stores: no such store in the bundled data: {_ids(unknown)}")
    if request.drift is not None and request.drift.store_id not in wanted:
        raise ReplayError(f"--drift: store {request.drift.store_id} is not replayed (--stores)")
    keep = sales[columns.STORE_ID].astype(int).isin(wanted) & (
        sales[columns.SALES_DATE] <= request.end.isoformat()
    )
    return sales[keep]


def _bundled_stores(store_ids: Sequence[int] | None) -> dict[str, pd.DataFrame]:
    """The bundled store files (Rossmann layout, as text), cut to `store_ids`."""
    frames = {}
    for name in STORE_FILES:
        frame = files.read_csv_as_text(ROSSMANN_DIR / name)
        if store_ids is not None:
            frame = frame[frame["Store"].astype(int).isin(store_ids)]
        frames[name] = frame
    return frames


def _load_history(engine: Engine, history: pd.DataFrame, stores: dict[str, pd.DataFrame]) -> int:
    """Load the history up to the day before the start as `sfmlops load-data` does: files
    validated, then written in one transaction."""
    folder = Path(tempfile.mkdtemp(prefix="sfmlops-replay-"))
    try:
        for name, frame in stores.items():
            frame.to_csv(folder / name, index=False)
        rossmann = {domain: source for source, domain in columns.ROSSMANN_SALES_COLUMNS.items()}
        history.rename(columns=rossmann).to_csv(folder / "train.csv", index=False)
        return loading.load_folder(engine, folder).sales_rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _train_if_needed(
    settings: Settings, engine: Engine, request: ReplayRequest, say: Step
) -> str | None:
    """Train every replayed store unless the champion's history ends the day before the start."""
    from sfmlops.services.training_executors import auto_executor  # noqa: PLC0415 - Ray, MLflow

    try:
        _version, bundle = model_training.champion_bundle(settings)
    except LookupError:
        bundle = None
    day_before = pd.Timestamp(request.start - dt.timedelta(days=1))
    if bundle is not None and bundle.last_date == day_before:
        say(f"the champion's history ends {day_before.date()}: no first training")
        return None
    training = model_training.TrainingRequest(
        models=list(request.models),
        windows=request.windows,
        force=True,
        reason=f"replay from {request.start}: the first training, on the history up to "
        f"{day_before.date()}",
    )
    say(f"training {', '.join(request.models)} on the history up to {day_before.date()} ...")
    outcome = model_training.run_training_job(
        settings, engine, training, auto_executor(settings, training)
    )
    say(f"registered version {outcome.version} as {outcome.alias}")
    return outcome.version


def _plan_of(sales: pd.DataFrame, day: dt.date, days: int) -> pd.DataFrame:
    """The covariates of `days` days from `day` as a store's plan holds them in advance (opening
    days, promotions, holidays: the Rossmann files give them for the future too), from the
    bundled records."""
    last = (day + dt.timedelta(days=days - 1)).isoformat()
    rows = sales[
        (sales[columns.SALES_DATE] >= day.isoformat()) & (sales[columns.SALES_DATE] <= last)
    ]
    return pd.DataFrame(
        {
            columns.STORE_ID: rows[columns.STORE_ID].astype("int64"),
            columns.PRODUCT_ID: columns.DEFAULT_PRODUCT,
            columns.SALES_DATE: pd.to_datetime(rows[columns.SALES_DATE]),
            columns.OPEN: rows[columns.OPEN].astype(int),
            columns.PROMO: rows[columns.PROMO].astype(int),
            columns.STATE_HOLIDAY: rows[columns.STATE_HOLIDAY].astype(str),
            columns.SCHOOL_HOLIDAY: rows[columns.SCHOOL_HOLIDAY].astype(int),
        }
    ).reset_index(drop=True)


def _actuals_of(sales: pd.DataFrame, day: dt.date, change: Drift | None) -> list[dict[str, Any]]:
    """The day's bundled records (domain names, text) with the drift applied."""
    rows = sales[sales[columns.SALES_DATE] == day.isoformat()].copy()
    if change is not None and day >= change.start:
        drifted = rows[columns.STORE_ID].astype(int) == change.store_id
        amounts = rows.loc[drifted, columns.SALES].astype(float) * change.factor
        rows.loc[drifted, columns.SALES] = amounts.round().astype(int).astype(str)
    return [{str(key): value for key, value in row.items()} for row in rows.to_dict("records")]


def _write_report(settings: Settings, report: ReplayReport) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    folder = settings.reports_dir / f"replay-{report.start}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    report.by_day.to_csv(folder / "accuracy_by_day.csv", index=False)
    report.store_gauges.to_csv(folder / "store_gauges.csv", index=False)
    pd.DataFrame(
        [
            {"day": r.day, "version": r.version, "alias": r.alias,
             "store_ids": " ".join(map(str, r.store_ids)), "reason": r.reason}
            for r in report.retrains
        ],
        columns=["day", "version", "alias", "store_ids", "reason"],
    ).to_csv(folder / "retrains.csv", index=False)  # fmt: skip
    return folder


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(str(store_id) for store_id in ids)
