"""`sfmlops replay`: time travel over the bundled data through the closed loop (also a demo)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated

import typer
from rich.table import Table

from sfmlops.cli.accuracy_report import COLUMNS, figure_text, key_text
from sfmlops.cli.context import console, fail, migrated_engine_of, settings_of
from sfmlops.cli.forecast_commands import (
    STORES_HELP,
    ModelsOption,
    WindowsOption,
    model_names,
    parse_store_ids,
)
from sfmlops.core import columns
from sfmlops.core.forecasting.models import DEFAULT_MODELS
from sfmlops.services import drift, training_data


def replay_command(
    ctx: typer.Context,
    start: Annotated[
        dt.datetime,
        typer.Option("--start", formats=["%Y-%m-%d"], help="First day replayed (YYYY-MM-DD)."),
    ],
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="Days replayed.")] = 14,
    stores: Annotated[
        str | None,
        typer.Option("--stores", help="Replay these stores only. " + STORES_HELP),
    ] = None,
    drift_spec: Annotated[
        str | None,
        typer.Option(
            "--drift",
            metavar="STORE:FACTOR:FROM",
            help="Multiply one store's actuals by FACTOR from the day FROM on (e.g. 7:1.6:2015-05-08).",
        ),
    ] = None,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset", help="Delete the sales and issued forecasts from --start on, if any."
        ),
    ] = False,
    models: ModelsOption = ",".join(DEFAULT_MODELS),
    windows: WindowsOption = 2,
    margin: Annotated[
        float,
        typer.Option(
            "--margin", min=1.0, help="Realized RMSPE over the store's baseline that is stale."
        ),
    ] = drift.DEFAULT_MARGIN,
    stale_days: Annotated[
        int,
        typer.Option(
            "--stale-days", min=1, max=drift.LOOKBACK_DAYS, help="Stale evenings in a row."
        ),
    ] = drift.DEFAULT_DAYS,
) -> None:
    """Replay days of the bundled data through the loop: load the history up to the day before
    --start and train (on a fresh home), then each day issue the forecasts, ingest the day's
    actuals (scored as they land), run the ingest check and the stale-store retrain, and
    advance the as-of date. Ends with realized accuracy per day and version and the retrains."""
    from sfmlops.services import model_training, replay  # noqa: PLC0415 - imports mlflow

    settings = settings_of(ctx)
    try:
        request = replay.ReplayRequest(
            start=start.date(),
            days=days,
            store_ids=parse_store_ids(stores),
            drift=replay.Drift.parse(drift_spec) if drift_spec else None,
            models=model_names(models),
            windows=windows,
            margin=margin,
            stale_days=stale_days,
            reset=reset,
        )
    except replay.ReplayError as error:
        fail(str(error))
    engine = migrated_engine_of(ctx)

    def step(line: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {line}", highlight=False)

    try:
        report = replay.replay(settings, engine, request, step)
    except (
        replay.ReplayError,
        training_data.NoTrainingDataError,
        model_training.TrainingFailedError,
        model_training.RegistryUnavailableError,
    ) as error:
        fail(str(error))
    console.print(f"Replay {report.start} to {report.end}: realized accuracy per day and version")
    table = Table(columns.SALES_DATE, "model_version", *COLUMNS)
    for row in report.by_day.to_dict("records"):
        table.add_row(
            key_text(row[columns.SALES_DATE]),
            str(row["model_version"]),
            *(figure_text(name, row[name]) for name in COLUMNS),
        )
    console.print(table)
    if not report.retrains:
        console.print("Retrains: none (no store stale)")
    for retrain in report.retrains:
        console.print(
            f"Retrain on {retrain.day}: version {retrain.version} ({retrain.alias}), "
            f"stores {', '.join(map(str, retrain.store_ids))}: {retrain.reason}"
        )
    console.print(f"Report files: {report.folder}")
