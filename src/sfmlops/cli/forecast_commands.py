"""Forecasting commands: backtest, train, predict."""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine

if TYPE_CHECKING:
    from sfmlops.services.model_training import TrainingOutcome, TrainingRequest

from sfmlops.adapters.files import DataFileNotFoundError
from sfmlops.cli.context import (
    console,
    fail,
    migrated_engine_of,
    record_command,
    settings_of,
)
from sfmlops.core import columns
from sfmlops.core.forecasting import metrics, model_selection
from sfmlops.core.forecasting.backtest import (
    SEASON_WINDOWS,
    WINDOW_END,
    WINDOW_KIND,
    WINDOW_START,
)
from sfmlops.core.forecasting.base import UnknownSeriesError
from sfmlops.core.forecasting.bundle import ForecastBundle
from sfmlops.core.forecasting.bundle_signature import BundleSignatureError
from sfmlops.core.forecasting.executors import ProcessPoolTaskExecutor
from sfmlops.core.forecasting.models import DEFAULT_MODELS, MODEL_NAMES
from sfmlops.services import backtest_reports, forecast_files, training_data
from sfmlops.services.loading import DataFileError
from sfmlops.services.training_executors import EXECUTOR_KINDS, auto_executor
from sfmlops.settings import Settings

MODELS_HELP = f"Comma-separated models among {', '.join(MODEL_NAMES)}."
STORES_HELP = "Comma-separated store ids or ranges (e.g. 1-50,77); default: every store."
# The options backtest and train share.
ModelsOption = Annotated[str, typer.Option("--models", help=MODELS_HELP)]
WindowsOption = Annotated[
    int, typer.Option("--windows", min=1, help="Backtest windows of 48 days.")
]
SeasonWindowsOption = Annotated[
    int,
    typer.Option(
        "--season-windows",
        min=0,
        help="Backtest windows of 48 days starting one year before the day after the data "
        "(the same season as the next forecast, a year earlier).",
    ),
]
StoresOption = Annotated[str | None, typer.Option("--stores", help=STORES_HELP)]
WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", min=1, help="Processes for per-store fits (default: CPU count)."),
]


def backtest_command(
    ctx: typer.Context,
    models: ModelsOption = ",".join(DEFAULT_MODELS),
    windows: WindowsOption = 3,
    season_windows: SeasonWindowsOption = SEASON_WINDOWS,
    stores: StoresOption = None,
    workers: WorkersOption = None,
) -> None:
    """Compare models on rolling and season backtests; write a report under HOME/reports."""
    names = model_names(models)
    settings = settings_of(ctx)
    data = _training_data(ctx, parse_store_ids(stores))
    started = time.perf_counter()
    try:
        report = model_selection.backtest(
            data.history,
            data.stores,
            names,
            windows=windows,
            season_windows=season_windows,
            executor=ProcessPoolTaskExecutor(workers),
            progress=_progress,
        )
    except ValueError as error:
        fail(str(error))
    folder = backtest_reports.write_report(report, settings.reports_dir, "backtest")
    _print_report(report)
    console.print(f"Backtest took {time.perf_counter() - started:,.0f} s; report: {folder}")


ExecutorOption = Annotated[
    str,
    typer.Option(
        "--executor",
        help="Where fits run: ray (SFMLOPS_RAY_ADDRESS, or a local Ray), processes, sequential; "
        "auto: ray when a cluster is configured or a model fans out (prophet), else in this "
        "process; store retrains in this process.",
    ),
]
EXECUTORS = EXECUTOR_KINDS


def train_command(
    ctx: typer.Context,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help=f"{MODELS_HELP} Default: {','.join(DEFAULT_MODELS)}; with --stores and a "
            "champion, the champion's own models (a per-series model it lacks is added for "
            "these stores).",
        ),
    ] = None,
    windows: WindowsOption = 3,
    season_windows: SeasonWindowsOption = SEASON_WINDOWS,
    stores: Annotated[
        str | None,
        typer.Option(
            "--stores",
            help="Retrain only these stores inside the champion (e.g. 4,7); without a "
            "champion yet, train these stores only. " + STORES_HELP,
        ),
    ] = None,
    workers: WorkersOption = None,
    executor: ExecutorOption = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Make the new version champion whatever its RMSPE.")
    ] = False,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            min=0.0,
            help="Relative backtest RMSPE the new version may lose and still become champion.",
        ),
    ] = model_selection.PROMOTION_TOLERANCE,
    max_failed_share: Annotated[
        float,
        typer.Option(
            "--max-failed-share",
            min=0.0,
            max=1.0,
            help="Fail the job when more series than this share fail to fit.",
        ),
    ] = model_selection.MAX_FAILED_SHARE,
    job_id: Annotated[
        str | None,
        typer.Option("--job-id", help="Report into this training job record (set by job runners)."),
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Why you train now (tags the MLflow run)."),
    ] = None,
    shard_series: Annotated[
        int | None,
        typer.Option(
            "--shard-series",
            min=1,
            help="Most series one gbm booster is fitted on (a full job); more are split into "
            "shards of whole stores. Default: SFMLOPS_GBM_SHARD_SERIES, else 2,500.",
        ),
    ] = None,
) -> None:
    """Train, track in MLflow and register a version of sfmlops-forecaster (champion or challenger)."""
    if executor not in EXECUTORS:
        fail(f"--executor: choose one of {', '.join(EXECUTORS)}")
    settings = settings_of(ctx)
    if shard_series is not None:
        settings = settings.model_copy(update={"gbm_shard_series": shard_series})
    engine = migrated_engine_of(ctx)
    from sfmlops.services import model_training  # noqa: PLC0415 - imports mlflow

    request = model_training.TrainingRequest(
        models=model_names(models) if models is not None else None,
        windows=windows,
        season_windows=season_windows,
        store_ids=parse_store_ids(stores),
        force=force,
        tolerance=tolerance,
        max_failed_share=max_failed_share,
        reason=reason,
    )
    kind = executor if executor != "auto" else auto_executor(settings, request)
    if job_id is None:  # a job's runner: its submission is already in the audit log
        record_command(engine, "model.train", {"stores": request.store_ids, "force": force})
    outcome = train_with_progress(settings, engine, request, kind, workers, job_id)
    print_outcome(outcome)


def train_with_progress(
    settings: Settings,
    engine: Engine,
    request: TrainingRequest,
    executor: str,
    workers: int | None,
    job_id: str | None = None,
    refresh_forecasts: bool = True,
) -> TrainingOutcome:
    """Run a training job with a progress bar; exits cleanly on the errors a user can fix.

    Args:
        refresh_forecasts: When the new version becomes the champion, rewrite the
            precomputed forecasts with it (the weekly pipeline forecasts by itself).
    """
    from sfmlops.adapters import mlflow_registry as registry  # noqa: PLC0415 - imports mlflow
    from sfmlops.services import model_training  # noqa: PLC0415 - imports mlflow

    def connecting() -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] connecting to Ray ...", highlight=False)

    try:
        with _TrainingProgress() as bar:
            outcome = model_training.run_training_job(
                settings,
                engine,
                request,
                executor,
                workers,
                job_id,
                progress=bar.update,
                on_connect=connecting,
            )
    except model_training.USER_ERRORS as error:
        fail(str(error))
    if refresh_forecasts and outcome.alias == registry.CHAMPION:
        refresh_precomputed_forecasts(settings, engine, outcome.version)
    return outcome


def refresh_precomputed_forecasts(settings: Settings, engine: Engine, version: str) -> None:
    """Print what `batch_forecast.refresh_for_champion` did for a new champion."""
    from sfmlops.services import batch_forecast  # noqa: PLC0415 - imports mlflow

    result = batch_forecast.refresh_for_champion(settings, engine, version)
    if isinstance(result, batch_forecast.NothingToForecastError):
        console.print(f"[dim]precomputed forecasts not refreshed: {result}[/]")
        return
    console.print(
        f"Refreshed the precomputed forecasts with version {result.model_version}: "
        f"{result.rows:,} rows, {result.start} to {result.end}"
    )


def predict_command(
    ctx: typer.Context,
    future: Path = typer.Option(
        ..., "--future", help="Days to forecast, in the competition's test.csv format."
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        help="CSV to write (its folder must exist): Id,Sales, the 80 % interval as "
        "Sales_lower,Sales_upper and the 95 % one as Sales_lower_95,Sales_upper_95.",
    ),
    bundle_path: Path | None = typer.Option(
        None, "--bundle", help="A bundle folder; default: the champion version in MLflow."
    ),
) -> None:
    """Forecast the rows of a future file with the current champions."""
    settings = settings_of(ctx)
    if not output.parent.is_dir():
        fail(f"--output: the folder {output.parent} does not exist\nno output was written")
    try:
        if bundle_path is not None:
            bundle = ForecastBundle.load(bundle_path, signing_key=settings.signing_key)
            source = f"bundle {bundle_path}"
        else:
            from sfmlops.services import model_training  # noqa: PLC0415

            version, bundle = model_training.champion_bundle(settings)
            source = f"sfmlops-forecaster version {version}"
    except (FileNotFoundError, LookupError, BundleSignatureError) as error:
        fail(str(error))
    try:
        row_ids, rows = forecast_files.read_future_file(future, bundle)
        forecast = bundle.predict(rows)
    except (DataFileError, DataFileNotFoundError, UnknownSeriesError, ValueError) as error:
        fail(f"{error}\nno output was written")
    forecast_files.write_submission(output, row_ids, forecast.frame)
    used = ", ".join(f"{name} {count}" for name, count in sorted(forecast.champions.items()))
    console.print(
        f"Wrote {len(row_ids):,} forecasts to {output} "
        f"(stores per champion model: {used}; {source})"
    )


def model_names(models: str) -> list[str]:
    names = [name.strip() for name in models.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODEL_NAMES]
    if not names or unknown:
        fail(f"--models: unknown model(s) {', '.join(unknown) or '(none given)'}; {MODELS_HELP}")
    return list(dict.fromkeys(names))


def parse_store_ids(stores: str | None) -> list[int] | None:
    if stores is None:
        return None
    chosen: list[int] = []
    for part in (p.strip() for p in stores.split(",")):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            fail(f"--stores: {part!r} is not a store id or a range like 1-50")
        chosen.extend(range(int(first), int(last or first) + 1))
    return sorted(set(chosen))


def _training_data(ctx: typer.Context, store_ids: list[int] | None) -> training_data.TrainingData:
    engine = migrated_engine_of(ctx)
    try:
        with console.status("Reading sales from the database ..."):
            return training_data.read_training_data(engine, store_ids)
    except training_data.NoTrainingDataError as error:
        fail(str(error))


class _TrainingProgress:
    """A live progress bar of series done, with the current step."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.bar.add_task("starting", total=None)

    def __enter__(self) -> _TrainingProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def update(self, message: str, done: int, total: int) -> None:
        self.bar.update(self.task, description=message, completed=done, total=total)
        if not console.is_terminal:  # logs of jobs get one line per step
            _progress(f"{message} ({done}/{total} series)")


def print_outcome(outcome: TrainingOutcome) -> None:
    if not outcome.summary.empty and outcome.mode == "full":
        console.print(_metrics_table(outcome.summary, "Backtest, reported window", windows=False))
        _print_stand_ins(outcome.stand_ins)
    mix = ", ".join(f"{name} {count}" for name, count in sorted(outcome.champion_mix.items()))
    for warning in outcome.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"Champions: {mix}")
    console.print(
        f"{outcome.mode} job: {outcome.series:,} series in {outcome.seconds:,.0f} s; "
        f"registered sfmlops-forecaster version {outcome.version} as "
        f"[bold]{outcome.alias}[/] ({outcome.reason}); MLflow run {outcome.run_id}"
    )


def _metrics_table(summary: pd.DataFrame, title: str, *, windows: bool) -> Table:
    """Backtest metrics per model (and window): narrow enough for an 80-column terminal;
    the report's metrics.csv has every metric."""
    table = Table(
        "model",
        *(["window"] if windows else []),
        "RMSPE",
        "MAPE",
        "bias",
        "80%",
        "95%",
        title=title,
    )
    for values in summary.to_dict(orient="records"):
        table.add_row(
            str(values[columns.MODEL]),
            *([_window_label(values)] if windows else []),
            f"{values[metrics.RMSPE]:.4f}",
            f"{values[metrics.MAPE]:.4f}",
            f"{values[metrics.BIAS]:+,.0f}",
            _coverage(values[metrics.COVERAGE_80]),
            _coverage(values[metrics.COVERAGE_95]),
        )
    return table


def _print_stand_ins(stand_ins: Mapping[str, str]) -> None:
    """Which models' rows above are a cheaper stand-in's errors, and what it is."""
    for model, description in sorted(stand_ins.items()):
        console.print(f"{model}: scored as its backtest stand-in, {description}", highlight=False)


def _coverage(share: float) -> str:
    """E.g. `79.8%`; `n/a` for a window whose forecasts had no calibrated interval."""
    return "n/a" if pd.isna(share) else f"{share:.1%}"


def _window_label(values: Mapping[Hashable, object]) -> str:
    """E.g. `2 season 06-14..07-31 2014` (the number, its kind and its days)."""
    number = str(values[columns.BACKTEST_WINDOW])
    start, end = values.get(WINDOW_START), values.get(WINDOW_END)
    if not isinstance(start, pd.Timestamp) or not isinstance(end, pd.Timestamp):
        return number
    return f"{number} {values[WINDOW_KIND]} {start:%Y-%m-%d}..{end:%m-%d}"


def _progress(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False)


def _print_report(report: model_selection.BacktestReport) -> None:
    ordered = report.summary.sort_values([columns.BACKTEST_WINDOW, metrics.RMSPE])
    title = "Backtest (champion: picked on earlier windows, scored on the last rolling one)"
    console.print(_metrics_table(ordered, title, windows=True))
    _print_stand_ins(report.stand_ins)
    mix = ", ".join(f"{name} {count}" for name, count in sorted(report.champion_mix().items()))
    console.print(f"Champion mix (picked on windows before {report.reported_window}): {mix}")
