"""`sfmlops pipeline`: the batch forecast and the weekly retrain + forecast (what Airflow runs)."""

from __future__ import annotations

from typing import Annotated

import typer

from sfmlops.cli.context import console, engine_of, fail, settings_of
from sfmlops.cli.data import migrate_or_fail
from sfmlops.cli.forecast_commands import (
    ModelsOption,
    WindowsOption,
    WorkersOption,
    model_names,
    print_outcome,
    run_training_job,
)
from sfmlops.core.forecasting.models import DEFAULT_MODELS

app = typer.Typer(no_args_is_help=True, help="Batch pipelines: forecast, weekly.")

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
    engine = engine_of(ctx)
    migrate_or_fail(engine)
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
    engine = engine_of(ctx)
    migrate_or_fail(engine)
    request = TrainingRequest(models=model_names(models), windows=windows)
    print_outcome(
        run_training_job(settings, engine, request, "ray", workers, refresh_forecasts=False)
    )
    forecast(ctx, days, None)
