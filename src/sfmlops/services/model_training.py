"""One training job: data from the database, fits on an executor, one MLflow run, one version.

A full job backtests every model on every series, bundles each series' champion and
registers the bundle as a new version of `sfmlops-forecaster`; a retrain refits chosen
series inside the current champion bundle (`core.forecasting.retraining`). Either way the
new version takes the `champion` alias unless its backtest RMSPE is worse than the current
champion's beyond a tolerance, in which case it is the `challenger`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from sfmlops import __version__
from sfmlops.adapters import mlflow_registry as registry
from sfmlops.adapters.db import plan_records
from sfmlops.adapters.db.engine import PROMOTION_LOCK_KEY, database_lock
from sfmlops.adapters.mlflow_registry import RegistryUnavailableError
from sfmlops.core import columns
from sfmlops.core.forecasting import metrics, model_selection
from sfmlops.core.forecasting.backtest import CHAMPION, SEASON_WINDOWS
from sfmlops.core.forecasting.bundle import ForecastBundle
from sfmlops.core.forecasting.executors import Executor
from sfmlops.core.forecasting.models import DEFAULT_MODELS, model_set
from sfmlops.core.forecasting.plan import by_store
from sfmlops.core.forecasting.retraining import retrain_series
from sfmlops.services import backtest_reports, training_data
from sfmlops.services.training_executors import executor_of
from sfmlops.services.training_jobs import JobReporter
from sfmlops.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from sfmlops.services.api.serving import HorizonForecasts

Progress = Callable[[str, int, int], None]
"""Called with a message, series done (estimated from the fits completed) and series total."""


__all__ = [
    "RegistryUnavailableError",
    "TrainingFailedError",
    "TrainingRequest",
    "run_training",
    "run_training_job",
]


class TrainingFailedError(RuntimeError):
    """The job ended without a new version (too many failed series, no champion to retrain)."""


# What a training job raises for a reason its caller can fix (no data, failed series, an
# unreachable registry, bad input): reported as a message, never as a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    training_data.NoTrainingDataError,
    TrainingFailedError,
    RegistryUnavailableError,
    ValueError,
)


@dataclass(frozen=True)
class TrainingRequest:
    """What a job trains.

    Attributes:
        models: The model set, checked (`models.model_set`). A full job backtests these and
            picks each series' champion among them (None: `DEFAULT_MODELS`); a retrain
            chooses the stores' champions among them, adding a per-series model (prophet)
            the champion lacks (None: among the champion's own models).
        store_ids: With a champion: retrain these stores inside it; without one: a full
            job on these stores only. None: a full job on every store.
        force: Give the new version `champion` whatever its RMSPE.
        tolerance: Relative RMSPE the new version may lose and still become champion.
        max_failed_share: Share of series whose final fit may fail before the job fails.
        reason: Why the job runs (e.g. the stale stores it retrains); kept as the MLflow
            run's tag `sfmlops.reason`.
    """

    models: Sequence[str] | None = None
    windows: int = 3
    season_windows: int = SEASON_WINDOWS
    store_ids: Sequence[int] | None = None
    force: bool = False
    tolerance: float = model_selection.PROMOTION_TOLERANCE
    max_failed_share: float = model_selection.MAX_FAILED_SHARE
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.models is not None:
            object.__setattr__(self, "models", model_set(self.models))

    @property
    def full_job_models(self) -> tuple[str, ...]:
        """The models a full job trains."""
        return tuple(self.models) if self.models is not None else DEFAULT_MODELS


@dataclass(frozen=True)
class TrainingOutcome:
    """A finished job: the registered version and where its alias went."""

    mode: str  # "full" or "retrain"
    version: str
    alias: str
    reason: str
    run_id: str
    series: int
    failures: pd.DataFrame
    summary: pd.DataFrame  # metrics per model on the reported window (full jobs)
    champion_mix: dict[str, int]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    # Per model whose backtest figures (in `summary`) are a stand-in's, what it is.
    stand_ins: dict[str, str] = field(default_factory=dict)


def run_training(
    settings: Settings,
    engine: Engine,
    request: TrainingRequest,
    executor: Executor,
    progress: Progress | None = None,
    on_run: Callable[[str], None] | None = None,
) -> TrainingOutcome:
    """Train, track, register and promote; returns the outcome.

    Args:
        on_run: Called with the MLflow run id as soon as the run exists.

    Raises:
        training_data.NoTrainingDataError: Nothing to train on, or unknown stores.
        TrainingFailedError: Too many series failed (the run is marked failed, no alias
            moves).
    """
    started = time.perf_counter()
    client = registry.connect(settings)
    champion = registry.version_with_alias(client, registry.CHAMPION)
    retrain = request.store_ids is not None and champion is not None
    data = training_data.read_training_data(engine, request.store_ids)
    series_total = int(
        data.history[[columns.STORE_ID, columns.PRODUCT_ID]].drop_duplicates().shape[0]
    )
    mode = "retrain" if retrain else "full"
    tags = {"sfmlops.mode": mode, "sfmlops.version": __version__}
    if request.reason:
        tags["sfmlops.reason"] = request.reason[:5000]
    with registry.training_run(client, settings, f"{mode}-{_stamp()}", tags) as run_id:
        if on_run:
            on_run(run_id)
        registry.log_params(
            _params(request, data, mode, champion)
            | {"gbm_shard_series": settings.gbm_shard_series or "default"}
        )
        report_folder: Path | None
        if retrain and champion is not None:
            bundle, failures, summary, report_folder = _retrain(
                settings, client, champion.version, data, request.models, progress, series_total
            )
            rmspe = champion.rmspe
        else:
            bundle, failures, summary, report_folder = _full(
                settings, request, data, executor, progress, series_total
            )
            rmspe = _champion_rmspe(summary)
        failed = model_selection.failed_series(failures)
        if report_folder is not None:
            registry.log_artifacts(report_folder, "report")
        if not failures.empty:
            folder = registry.scratch_dir(settings)
            failures.to_csv(folder / "failures.csv", index=False)
            registry.log_artifacts(folder, "report")
            shutil.rmtree(folder, ignore_errors=True)
        registry.log_metrics(
            _metrics(summary, bundle, rmspe) | {"failed_series": float(len(failed))}
        )
        if not retrain:
            registry.set_tags(_window_tags(bundle))
        if stand_in_tags := _stand_in_tags(bundle):
            registry.set_tags(stand_in_tags)
        share = len(failed) / max(series_total, 1)
        if share > request.max_failed_share:
            raise TrainingFailedError(
                f"{len(failed)} of {series_total} series failed to fit ({share:.1%} > "
                f"{request.max_failed_share:.0%}); no version registered. First: "
                + "; ".join(
                    failures[columns.STORE_ID].astype(str)
                    + " "
                    + failures[model_selection.FAILURE_ERROR]
                )[:500]
            )
        horizon = _served_horizon(engine, bundle)
        # Compare-and-set on `champion`: registering and promoting happen under one lock, and
        # only if the champion this job started from still is the champion. Otherwise a
        # retrain is redone on top of the new champion (so a concurrent retrain of other
        # stores is kept), and a full training becomes a challenger unless forced.
        with database_lock(engine, PROMOTION_LOCK_KEY, "promote"):
            current = registry.version_with_alias(client, registry.CHAMPION)
            moved = _version(current) != _version(champion)
            superseded = False
            if moved and retrain and current is not None:
                bundle, failures, summary, report_folder = _retrain(
                    settings, client, current.version, data, request.models, progress, series_total
                )
                registry.set_tags({"sfmlops.rebased_onto": current.version})
                horizon = _served_horizon(engine, bundle)
                if report_folder is not None:
                    registry.log_artifacts(report_folder, "report")
                champion = current
            elif moved and not request.force:
                superseded = True
            folder = registry.scratch_dir(settings)
            try:
                bundle.save(folder / "bundle")
                horizon.save(folder / "bundle")
                registered = registry.register_bundle(
                    folder / "bundle",
                    run_id=run_id,
                    signing_key=settings.signing_key,
                    description=_description(mode, request, champion),
                )
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            if superseded:
                promotion = registry.Promotion(
                    registry.CHALLENGER,
                    f"the champion changed to version {_version(current)} during training "
                    f"(started from {_version(champion) or 'none'})",
                    _version(current),
                )
                registry.set_alias(client, registry.CHALLENGER, registered.version)
            else:
                promotion = registry.promote(
                    client, registered, tolerance=request.tolerance, force=request.force
                )
        registry.set_tags({"sfmlops.alias": promotion.alias, "sfmlops.promotion": promotion.reason})
    warnings = [
        f"store {store} product {product}: fit failed, kept its previous model"
        for store, product in sorted(failed)
    ]
    return TrainingOutcome(
        mode=mode,
        version=registered.version,
        alias=promotion.alias,
        reason=promotion.reason,
        run_id=run_id,
        series=series_total,
        failures=failures,
        summary=summary,
        champion_mix=dict(bundle.metadata.get("champion_mix", {})),
        seconds=time.perf_counter() - started,
        warnings=warnings,
        stand_ins=dict(bundle.metadata.get("backtest_stand_ins", {})),
    )


def _served_horizon(engine: Engine, bundle: ForecastBundle) -> HorizonForecasts:
    """Every series' forecast for the calibrated horizon with the stored plan, as the API
    serves it. Saved with the bundle, so an API loading it predicts only the states whose
    plan changed since, instead of every series (most of its start-up at 100k series)."""
    # Imported here: the API's model cache imports this module.
    from sfmlops.services.api import serving  # noqa: PLC0415

    with engine.connect() as connection:
        plan = plan_records.read_plan(connection, since=serving.first_forecast_date(bundle))
    return serving.horizon_forecasts(bundle, by_store(plan))


def _version(registered: registry.RegisteredVersion | None) -> str | None:
    return registered.version if registered is not None else None


def run_training_job(
    settings: Settings,
    engine: Engine,
    request: TrainingRequest,
    executor_kind: str,
    workers: int | None = None,
    job_id: str | None = None,
    progress: Progress | None = None,
    on_connect: Callable[[], None] | None = None,
) -> TrainingOutcome:
    """Run a training job on an executor of `executor_kind`, reporting into its job record.

    Args:
        executor_kind: "ray", "processes" or "sequential" (`training_executors.auto_executor`
            resolves "auto").
        job_id: The `training_jobs` record to report start, progress and outcome into (set
            when a job runner started this process); None: no record.
        progress: Called as in `run_training`.
        on_connect: Called before connecting to Ray.

    Raises:
        ValueError: Unknown job id, or bad input found while training.
        training_data.NoTrainingDataError, TrainingFailedError, RegistryUnavailableError: As
            `run_training`; the job record says failed, with the error.
    """
    reporter = JobReporter(engine, job_id) if job_id is not None else None

    def on_progress(message: str, done: int, total: int) -> None:
        if progress:
            progress(message, done, total)
        if reporter:
            reporter.progress(done, total)

    try:
        with executor_of(settings, executor_kind, workers, on_connect) as executor:
            if reporter:
                reporter.started(0)
            outcome = run_training(
                settings,
                engine,
                request,
                executor,
                progress=on_progress,
                on_run=reporter.tracked if reporter else None,
            )
    except (
        training_data.NoTrainingDataError,
        TrainingFailedError,
        RegistryUnavailableError,
        ValueError,
    ) as error:
        if reporter:
            reporter.failed(str(error))
        raise
    except BaseException as error:
        if reporter:
            reporter.failed(f"{type(error).__name__}: {error}")
        raise
    if reporter:
        reporter.progress(outcome.series, outcome.series)
        reporter.succeeded(outcome.version, "; ".join(outcome.warnings) or None)
    return outcome


def champion_bundle(
    settings: Settings, client: MlflowClient | None = None
) -> tuple[str, ForecastBundle]:
    """The champion's version and bundle, cached under HOME/models/versions/<version>.

    Raises:
        LookupError: No version has the `champion` alias yet.
    """
    client = client or registry.connect(settings)
    champion = registry.version_with_alias(client, registry.CHAMPION)
    if champion is None:
        raise LookupError("no champion model yet: run `sfmlops train` first")
    return champion.version, ForecastBundle.load(
        version_folder(settings, client, champion.version), signing_key=settings.signing_key
    )


def version_folder(settings: Settings, client: MlflowClient, version: str) -> Path:
    """A local copy of a version's bundle folder, downloaded once (versions never change)."""
    cache = settings.home / "models" / "versions"
    folder = cache / version
    if (folder / "bundle.json").is_file():
        return folder
    staging = registry.scratch_dir(settings)
    try:
        downloaded = registry.download_bundle(client, version, staging)
        cache.mkdir(parents=True, exist_ok=True)
        try:
            downloaded.replace(folder)  # atomic: a reader never sees half a bundle
        except OSError:
            if not (folder / "bundle.json").is_file():  # not a concurrent download's win
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _full(
    settings: Settings,
    request: TrainingRequest,
    data: training_data.TrainingData,
    executor: Executor,
    progress: Progress | None,
    series_total: int,
) -> tuple[ForecastBundle, pd.DataFrame, pd.DataFrame, Path]:
    fits_total = len(request.full_job_models) * (request.windows + request.season_windows + 1)
    fits_done = 0

    def on_step(message: str) -> None:
        nonlocal fits_done
        if progress:
            progress(message, series_total * fits_done // fits_total, series_total)
        fits_done = min(fits_done + 1, fits_total)

    bundle, report = model_selection.train(
        data.history,
        data.stores,
        request.full_job_models,
        windows=request.windows,
        season_windows=request.season_windows,
        executor=executor,
        progress=on_step,
        shard_series=settings.gbm_shard_series,
    )
    if progress:
        progress("registering the bundle", series_total, series_total)
    folder = backtest_reports.write_report(report, settings.reports_dir, "train")
    return bundle, report.failures, report.reported(), folder


def _retrain(
    settings: Settings,
    client: MlflowClient,
    version: str,
    data: training_data.TrainingData,
    models: Sequence[str] | None,
    progress: Progress | None,
    series_total: int,
) -> tuple[ForecastBundle, pd.DataFrame, pd.DataFrame, Path | None]:
    if progress:
        progress(f"loading champion version {version}", 0, series_total)
    bundle = ForecastBundle.load(
        version_folder(settings, client, version), signing_key=settings.signing_key
    )

    def on_step(message: str) -> None:
        if progress:
            progress(message, 0, series_total)

    retrained, report = retrain_series(
        bundle, data.history, data.stores, models=models, progress=on_step
    )
    retrained.metadata["parent_version"] = version
    if progress:
        progress("registering the bundle", series_total, series_total)
    folder = registry.scratch_dir(settings)
    changed = report.previous.merge(
        report.champions, on=[columns.STORE_ID, columns.PRODUCT_ID], suffixes=("_before", "_after")
    )
    changed.to_csv(folder / "retrained_series.csv", index=False)
    summary = pd.DataFrame(bundle.metadata.get("reported_metrics", []))
    return retrained, report.failures, summary, folder


def _params(
    request: TrainingRequest,
    data: training_data.TrainingData,
    mode: str,
    champion: registry.RegisteredVersion | None,
) -> dict[str, Any]:
    history = data.history
    return {
        "mode": mode,
        "models": ",".join(request.models)
        if request.models is not None
        else ("champion's own" if mode == "retrain" else ",".join(DEFAULT_MODELS)),
        "backtest_windows": request.windows,
        "season_windows": request.season_windows,
        "stores": "all" if request.store_ids is None else ",".join(map(str, request.store_ids)),
        "series": int(history[[columns.STORE_ID, columns.PRODUCT_ID]].drop_duplicates().shape[0]),
        "rows": len(history),
        "data_start": history[columns.SALES_DATE].min().date().isoformat(),
        "data_end": history[columns.SALES_DATE].max().date().isoformat(),
        "data_fingerprint": data_fingerprint(history),
        "parent_version": champion.version if champion and mode == "retrain" else "",
        "tolerance": request.tolerance,
        "force": request.force,
        "sfmlops_version": __version__,
        "git_commit": git_commit() or "unknown",
    }


def data_fingerprint(history: pd.DataFrame) -> str:
    """A SHA-256 of the training rows (same rows in the same order, same fingerprint)."""
    hashed = pd.util.hash_pandas_object(history[list(columns.SALES_COLUMNS)], index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()


def git_commit() -> str | None:
    """The commit of the sfmlops checkout this runs from, if it runs from one."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _metrics(
    summary: pd.DataFrame, bundle: ForecastBundle, rmspe: float | None
) -> dict[str, float]:
    logged: dict[str, float] = {}
    if rmspe is not None:
        logged[registry.RMSPE_METRIC] = float(rmspe)
    for row in summary.to_dict(orient="records"):
        for name in metrics.REPORTED:
            if name in row and row[name] is not None:
                logged[f"{row[columns.MODEL]}_{name}"] = float(row[name])
    for model, count in bundle.metadata.get("champion_mix", {}).items():
        logged[f"champions_{model}"] = float(count)
    # Every backtest window, season windows included: w<number>_<kind>_<model>_<metric>
    # (the run's tags say which days each window forecast).
    for row in bundle.metadata.get("window_metrics", []):
        for name in (metrics.RMSPE, metrics.BIAS, metrics.COVERAGE_80, metrics.COVERAGE_95):
            value = row.get(name)
            if value is not None and np.isfinite(value):
                key = f"w{row[columns.BACKTEST_WINDOW]}_{row['kind']}_{row[columns.MODEL]}_{name}"
                logged[key] = float(value)
    return logged


def _window_tags(bundle: ForecastBundle) -> dict[str, str]:
    """`sfmlops.window.<number>`: each backtest window's kind and days."""
    return {
        f"sfmlops.window.{window['number']}": f"{window.get('kind', 'rolling')} "
        f"{window['start']}..{window['end']}"
        for window in bundle.metadata.get("backtest_windows", [])
    }


def _stand_in_tags(bundle: ForecastBundle) -> dict[str, str]:
    """`sfmlops.backtest_stand_in.<model>`: for a model whose backtest fitted a stand-in in
    its place, what it is. Its metrics in the run (`<model>_rmspe`, `w<n>_..._<model>_...`,
    and the champions' where it is champion) are that stand-in's errors, not the served
    model's: MLflow metrics have no description, so the run's tags carry it."""
    return {
        f"sfmlops.backtest_stand_in.{model}": description
        for model, description in bundle.metadata.get("backtest_stand_ins", {}).items()
    }


def _champion_rmspe(summary: pd.DataFrame) -> float | None:
    rows = summary[summary[columns.MODEL] == CHAMPION]
    return float(rows[metrics.RMSPE].iloc[0]) if not rows.empty else None


def _description(
    mode: str, request: TrainingRequest, champion: registry.RegisteredVersion | None
) -> str:
    if mode == "retrain" and champion is not None and request.store_ids is not None:
        stores = ", ".join(map(str, request.store_ids))
        return f"version {champion.version} with stores {stores} retrained"
    return f"full training job: models {', '.join(request.full_job_models)}"


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
