"""`sfmlops bootstrap`: bring a new deployment to "forecasts served", once.

Each step runs only when its result is missing, so the command is safe to run at every
start (Compose's one-shot service, the chart's hook Job): the schema is migrated, the
bundled data is loaded into an empty database, the first training runs when no champion is
registered, and the champion's forecasts are written when it has none. Concurrent runs take
turns on a database lock; the later ones find the work done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from sfmlops.adapters.db import forecast_records, sales_records, store_records
from sfmlops.adapters.db.engine import BOOTSTRAP_LOCK_KEY, database_lock
from sfmlops.cli import pipeline
from sfmlops.cli.context import (
    console,
    engine_of,
    fail,
    migrate_or_fail,
    settings_of,
    wait_for,
    wait_for_database,
)
from sfmlops.cli.data import load_into, print_summary
from sfmlops.cli.forecast_commands import (
    EXECUTORS,
    ExecutorOption,
    ModelsOption,
    WindowsOption,
    WorkersOption,
    model_names,
    print_outcome,
    train_with_progress,
)
from sfmlops.core.forecasting.models import DEFAULT_MODELS
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services.training_executors import auto_executor


def bootstrap(
    ctx: typer.Context,
    train_stores: Annotated[
        int | None,
        typer.Option(
            "--train-stores",
            min=1,
            help="Train only the first N stores (by id) in the first training, e.g. for a "
            "quick trial; default: every store.",
        ),
    ] = None,
    path: Annotated[
        Path,
        typer.Option(
            "--path",
            help="Data folder to load into an empty database; default: the bundled Rossmann data.",
            file_okay=False,
        ),
    ] = ROSSMANN_DIR,
    models: ModelsOption = ",".join(DEFAULT_MODELS),
    windows: WindowsOption = 3,
    workers: WorkersOption = None,
    executor: ExecutorOption = "auto",
    days: pipeline.DaysOption = 7,
    wait: Annotated[
        int,
        typer.Option(
            "--wait",
            min=0,
            help="Seconds to wait for the database and the MLflow server to answer (when "
            "started together with them); default: fail at once.",
        ),
    ] = 0,
) -> None:
    """Migrate, load the bundled data into an empty database, train if no champion, forecast.

    Idempotent: a step whose result exists is skipped, and a second run does nothing.
    """
    if executor not in EXECUTORS:
        fail(f"--executor: choose one of {', '.join(EXECUTORS)}")
    settings = settings_of(ctx)
    engine = engine_of(ctx)
    names = model_names(models)
    done: list[str] = []

    console.rule("sfmlops bootstrap")
    from sfmlops.adapters import mlflow_registry as registry  # noqa: PLC0415 - imports mlflow

    def registry_answers() -> None:
        registry.version_with_alias(registry.connect(settings), registry.CHAMPION)

    if wait:
        wait_for_database(engine, wait)
        wait_for("the MLflow server", registry_answers, wait)
    migration = migrate_or_fail(engine)
    if migration.upgraded:
        console.print(f"schema: migrated from {migration.before or 'empty'} to {migration.after}")
        done.append("schema")
    else:
        console.print(f"schema: already at revision {migration.after}, nothing to migrate")

    try:
        with database_lock(engine, BOOTSTRAP_LOCK_KEY, "bootstrap"):
            with engine.connect() as connection:
                last_date = sales_records.latest_sales_date(connection)
            if last_date is None:
                console.print(f"data: the database holds no sales; loading {path}")
                load_into(engine, path)
                print_summary(engine)
                done.append("data")
            else:
                console.print(f"data: sales up to {last_date} already stored, nothing loaded")

            from sfmlops.services.model_training import TrainingRequest  # noqa: PLC0415 - mlflow

            try:
                champion = registry.version_with_alias(
                    registry.connect(settings), registry.CHAMPION
                )
            except registry.RegistryUnavailableError as error:
                fail(f"cannot ask the model registry for a champion: {error}")
            if champion is None:
                with engine.connect() as connection:
                    store_ids = sorted(store_records.store_ids(connection))
                chosen = store_ids[:train_stores] if train_stores else None
                scope = f"the first {len(chosen)} stores" if chosen else "every store"
                console.print(f"model: no champion registered; training {scope}")
                request = TrainingRequest(models=names, windows=windows, store_ids=chosen)
                kind = executor if executor != "auto" else auto_executor(settings, request)
                outcome = train_with_progress(settings, engine, request, kind, workers)
                print_outcome(outcome)
                champion_version = outcome.version
                done.append("training")
            else:
                champion_version = champion.version
                console.print(
                    f"model: champion version {champion_version} already registered, not trained"
                )

            with engine.connect() as connection:
                forecast_series = forecast_records.forecast_days_per_series(
                    connection, champion_version
                )
            if not forecast_series:
                console.print(f"forecasts: none from version {champion_version} yet; forecasting")
                pipeline.forecast(ctx, days, None)
                done.append("forecasts")
            else:
                console.print(
                    f"forecasts: {len(forecast_series):,} series already forecast by version "
                    f"{champion_version}, nothing written"
                )
    except SQLAlchemyError as error:
        fail(f"database error during the bootstrap: {error.__class__.__name__}: {error}")

    if done:
        console.print(f"[bold green]Bootstrap done[/] ({', '.join(done)}): forecasts are served.")
    else:
        console.print("[bold green]Nothing to do[/]: already bootstrapped, forecasts are served.")
