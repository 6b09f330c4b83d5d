"""`sfmlops pipeline`: the batch forecast and the weekly retrain + forecast (what Airflow runs)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from sfmlops.cli.context import console, fail, migrated_engine_of, settings_of
from sfmlops.cli.forecast_commands import (
    ModelsOption,
    WindowsOption,
    WorkersOption,
    model_names,
    print_outcome,
    refresh_precomputed_forecasts,
    train_with_progress,
)
from sfmlops.core.forecasting.models import DEFAULT_MODELS
from sfmlops.services import drift
from sfmlops.services.status import as_of_date

app = typer.Typer(no_args_is_help=True, help="Batch pipelines: forecast, weekly, retrain-stale.")

DaysOption = Annotated[
    int, typer.Option("--days", min=1, max=366, help="Days to forecast after the as-of date.")
]


@app.command("forecast")
def forecast(
    ctx: typer.Context,
    days: DaysOption = 7,
    model_version: Annotated[
        str | None,
        typer.Option("--model-version", help="Forecast with this version; default: the champion."),
    ] = None,
) -> None:
    """Write the next days' forecasts of every series into the database (champion's version)."""
    from sfmlops.services import batch_forecast  # noqa: PLC0415 - imports mlflow

    settings = settings_of(ctx)
    engine = migrated_engine_of(ctx)
    try:
        with console.status("Forecasting every series with the champion ..."):
            result = batch_forecast.forecast_next_days(settings, engine, days, model_version)
    except batch_forecast.NothingToForecastError as error:
        fail(str(error))
    console.print(
        f"Wrote {result.rows:,} forecasts ({result.series:,} series, {result.start} to "
        f"{result.end}) with sfmlops-forecaster version {result.model_version}"
    )
    for assumption in result.assumptions:
        console.print(f"[dim]assumed: {assumption}[/]")


@app.command("weekly")
def weekly(
    ctx: typer.Context,
    models: ModelsOption = ",".join(DEFAULT_MODELS),
    windows: WindowsOption = 3,
    workers: WorkersOption = None,
    days: DaysOption = 7,
) -> None:
    """Train every store (a full job on Ray), then write the next days' forecasts."""
    from sfmlops.services.model_training import TrainingRequest  # noqa: PLC0415 - imports mlflow

    settings = settings_of(ctx)
    engine = migrated_engine_of(ctx)
    request = TrainingRequest(
        models=model_names(models), windows=windows, reason="weekly full retrain (schedule)"
    )
    print_outcome(
        train_with_progress(settings, engine, request, "ray", workers, refresh_forecasts=False)
    )
    forecast(ctx, days, None)


@app.command("retrain-stale")
def retrain_stale(
    ctx: typer.Context,
    margin: Annotated[
        float,
        typer.Option(
            "--margin", min=1.0, help="Realized RMSPE over the store's baseline that is stale."
        ),
    ] = drift.DEFAULT_MARGIN,
    days: Annotated[
        int,
        typer.Option("--days", min=1, max=drift.LOOKBACK_DAYS, help="Stale evenings in a row."),
    ] = drift.DEFAULT_DAYS,
    max_stores: Annotated[
        int,
        typer.Option("--max-stores", min=1, help="Most stores one run retrains (worst first)."),
    ] = drift.DEFAULT_MAX_STORES,
) -> None:
    """Retrain the stale stores (what the daily DAG runs after scoring): one single-store
    retrain job for all of them, never while a full training job is queued or running."""
    settings = settings_of(ctx)
    engine = migrated_engine_of(ctx)
    with engine.connect() as connection:
        end = as_of_date(settings, connection)
    if end is None:
        fail("no sales in the database: run `sfmlops load-data` first")
    from sfmlops.adapters import mlflow_registry as registry  # noqa: PLC0415 - imports mlflow
    from sfmlops.services import model_training  # noqa: PLC0415 - imports mlflow

    try:
        result = drift.retrain_stale_stores(settings, engine, end, margin, days, max_stores)
    except model_training.USER_ERRORS as error:
        fail(str(error))
    print_stale_retrain(result, end, max_stores)
    if result.outcome is not None and result.outcome.alias == registry.CHAMPION:
        refresh_precomputed_forecasts(settings, engine, result.outcome.version)


def print_stale_retrain(result: drift.StaleRetrain, end: dt.date, max_stores: int) -> None:
    """Print what `drift.retrain_stale_stores` found and did."""
    if not result.stale:
        console.print(f"No stale store on the scored days up to {end}.")
        return
    for store in result.stale:
        console.print(f"stale: {store.reason()}")
    if result.busy:
        console.print("A full training job is queued or running: no retrain now.")
        return
    if len(result.stale) > max_stores:
        console.print(f"Retraining the {max_stores} furthest above their backtest only.")
    if result.outcome is not None:
        print_outcome(result.outcome)
