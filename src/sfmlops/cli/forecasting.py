"""Forecasting commands: backtest, train, predict."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sfmlops.adapters.files import DataFileNotFoundError
from sfmlops.cli.context import console, engine_of, fail, settings_of
from sfmlops.cli.data import migrate_or_fail
from sfmlops.core import columns as c
from sfmlops.core.forecasting import metrics as m
from sfmlops.core.forecasting import training
from sfmlops.core.forecasting.base import UnknownSeriesError
from sfmlops.core.forecasting.bundle import ForecastBundle
from sfmlops.core.forecasting.executors import Executor, ProcessPoolTaskExecutor
from sfmlops.core.forecasting.models import DEFAULT_MODELS, MODEL_NAMES
from sfmlops.services import forecasting as service
from sfmlops.services.loading import DataFileError

MODELS_HELP = f"Comma-separated models among {', '.join(MODEL_NAMES)}."
STORES_HELP = "Comma-separated store ids or ranges (e.g. 1-50,77); default: every store."
# The options backtest and train share.
ModelsOption = Annotated[str, typer.Option("--models", help=MODELS_HELP)]
WindowsOption = Annotated[
    int, typer.Option("--windows", min=1, help="Backtest windows of 48 days.")
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
    stores: StoresOption = None,
    workers: WorkersOption = None,
) -> None:
    """Compare models on rolling-origin backtests; write a report under HOME/reports."""
    names = _model_names(models)
    settings = settings_of(ctx)
    data = _training_data(ctx, _store_ids(stores))
    started = time.perf_counter()
    try:
        report = training.backtest(
            data.history,
            data.stores,
            names,
            windows=windows,
            executor=_executor(workers),
            progress=_progress,
        )
    except ValueError as error:
        fail(str(error))
    folder = service.write_report(report, settings.reports_dir, "backtest")
    _print_report(report)
    console.print(f"Backtest took {time.perf_counter() - started:,.0f} s; report: {folder}")


def train_command(
    ctx: typer.Context,
    models: ModelsOption = ",".join(DEFAULT_MODELS),
    windows: WindowsOption = 3,
    stores: StoresOption = None,
    workers: WorkersOption = None,
) -> None:
    """Backtest, pick each store's champion, fit on all data and save the bundle."""
    names = _model_names(models)
    settings = settings_of(ctx)
    data = _training_data(ctx, _store_ids(stores))
    started = time.perf_counter()
    try:
        bundle, report = training.train(
            data.history,
            data.stores,
            names,
            windows=windows,
            executor=_executor(workers),
            progress=_progress,
        )
    except ValueError as error:
        fail(str(error))
    folder = service.save_bundle(bundle, settings.home / "models")
    reports = service.write_report(report, settings.reports_dir, "train")
    _print_report(report)
    mix = ", ".join(
        f"{name} {count}" for name, count in sorted(bundle.metadata["champion_mix"].items())
    )
    console.print(f"Champions (picked on all windows): {mix}")
    console.print(
        f"Trained on {len(data.history):,} rows up to {bundle.last_date.date()} in "
        f"{time.perf_counter() - started:,.0f} s; bundle: {folder}; report: {reports}"
    )


def predict_command(
    ctx: typer.Context,
    future: Path = typer.Option(
        ..., "--future", help="Days to forecast, in the competition's test.csv format."
    ),
    output: Path = typer.Option(
        ..., "--output", help="CSV to write: Id,Sales,Sales_lower,Sales_upper."
    ),
    bundle_path: Path | None = typer.Option(
        None, "--bundle", help="A bundle folder; default: the one `sfmlops train` saved last."
    ),
) -> None:
    """Forecast the rows of a future file with the current champions."""
    settings = settings_of(ctx)
    try:
        folder = bundle_path or service.current_bundle_folder(settings.home / "models")
        bundle = ForecastBundle.load(folder)
    except FileNotFoundError as error:
        fail(str(error))
    try:
        row_ids, rows = service.read_future_file(future, bundle)
        forecast = bundle.predict(rows)
    except (DataFileError, DataFileNotFoundError, UnknownSeriesError, ValueError) as error:
        fail(f"{error}\nno output was written")
    service.write_submission(output, row_ids, forecast.frame)
    used = ", ".join(f"{name} {count}" for name, count in sorted(forecast.champions.items()))
    console.print(
        f"Wrote {len(row_ids):,} forecasts to {output} "
        f"(stores per champion model: {used}; bundle {folder.name})"
    )


def _model_names(models: str) -> list[str]:
    names = [name.strip() for name in models.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODEL_NAMES]
    if not names or unknown:
        fail(f"--models: unknown model(s) {', '.join(unknown) or '(none given)'}; {MODELS_HELP}")
    return list(dict.fromkeys(names))


def _store_ids(stores: str | None) -> list[int] | None:
    if stores is None:
        return None
    chosen: list[int] = []
    for part in (p.strip() for p in stores.split(",")):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            fail(f"--stores: {part!r} is not a store id or a range like 1-50")
        chosen.extend(range(int(first), int(last or first) + 1))
    return sorted(set(chosen))


def _training_data(ctx: typer.Context, store_ids: list[int] | None) -> service.TrainingData:
    engine = engine_of(ctx)
    migrate_or_fail(engine)
    try:
        with console.status("Reading sales from the database ..."):
            return service.read_training_data(engine, store_ids)
    except service.NoTrainingDataError as error:
        fail(str(error))


def _executor(workers: int | None) -> Executor:
    return ProcessPoolTaskExecutor(workers)


def _progress(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False)


def _print_report(report: training.BacktestReport) -> None:
    # Narrow enough for an 80-column terminal; metrics.csv in the report has every metric.
    table = Table(
        "model",
        "window",
        "RMSPE",
        "MAPE",
        "bias",
        "80%",
        "95%",
        title="Backtest (champion: picked on earlier windows, scored on the last)",
    )
    ordered = report.summary.sort_values([c.BACKTEST_WINDOW, m.RMSPE])
    for values in ordered.to_dict(orient="records"):
        table.add_row(
            str(values[c.MODEL]),
            str(values[c.BACKTEST_WINDOW]),
            f"{values[m.RMSPE]:.4f}",
            f"{values[m.MAPE]:.4f}",
            f"{values[m.BIAS]:+,.0f}",
            f"{values[m.COVERAGE_80]:.1%}",
            f"{values[m.COVERAGE_95]:.1%}",
        )
    console.print(table)
    mix = ", ".join(f"{name} {count}" for name, count in sorted(report.champion_mix().items()))
    console.print(f"Champion mix (picked on windows before {report.reported_window}): {mix}")
