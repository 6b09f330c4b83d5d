"""`sfmlops pipeline`: the batch forecast and the weekly retrain + forecast (what Airflow runs)."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer

from sfmlops.adapters.db import training_job_records
from sfmlops.cli.context import console, fail, migrated_engine_of, settings_of
from sfmlops.cli.forecast_commands import (
    ModelsOption,
    WindowsOption,
    WorkersOption,
    model_names,
    print_outcome,
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
        typer.Option("--margin", min=1.0, help="Realized over backtest RMSPE that is stale."),
    ] = drift.DEFAULT_MARGIN,
    days: Annotated[
        int,
        typer.Option("--days", min=1, max=drift.LOOKBACK_DAYS, help="Scored days in a row."),
    ] = drift.DEFAULT_DAYS,
    max_stores: Annotated[
        int,
        typer.Option("--max-stores", min=1, help="Most stores one run retrains (worst first)."),
    ] = 20,
) -> None:
    """Retrain the stale stores (what the daily DAG runs after scoring): one single-store
    retrain job for all of them, never while a full training job is queued or running."""
    from sfmlops.services.model_training import TrainingRequest  # noqa: PLC0415 - imports mlflow

    settings = settings_of(ctx)
    engine = migrated_engine_of(ctx)
    with engine.connect() as connection:
        end = as_of_date(settings, connection)
        if end is None:
            fail("no sales in the database: run `sfmlops load-data` first")
        stale = drift.stale_stores(connection, end, margin, days)
        busy = drift.full_training_running(connection)
    if not stale:
        console.print(f"No stale store on the scored days up to {end}.")
        return
    for store in stale:
        console.print(f"stale: {store.reason()}")
    if busy:
        console.print("A full training job is queued or running: no retrain now.")
        return
    chosen = stale[:max_stores]
    if len(stale) > max_stores:
        console.print(f"Retraining the {max_stores} furthest above their backtest only.")
    reason = f"stale on {days} scored days up to {end} (> {margin}x backtest): " + "; ".join(
        store.reason() for store in chosen
    )
    request = TrainingRequest(
        models=list(DEFAULT_MODELS),
        store_ids=[store.store_id for store in chosen],
        reason=reason,
    )
    job_id = str(uuid.uuid4())
    with engine.begin() as connection:
        training_job_records.create_training_job(connection, job_id, "local", request.store_ids)
    print_outcome(train_with_progress(settings, engine, request, "sequential", None, job_id))
