"""Database and data commands: init, load-data, load-plan, stores."""

from __future__ import annotations

import getpass
from pathlib import Path

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sfmlops.adapters.db import sales_records, store_records
from sfmlops.adapters.files import DataFileNotFoundError
from sfmlops.cli.context import (
    console,
    engine_of,
    fail,
    migrate_or_fail,
    migrated_engine_of,
    record_command,
    settings_of,
)
from sfmlops.core import columns
from sfmlops.core.validation import SalesLimits
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services import covariate_plan, forecast_files, loading, synthetic_data
from sfmlops.services.ingestion import sales_limits


def init_database(ctx: typer.Context) -> None:
    """Create or upgrade the database schema (idempotent; concurrent runs take turns)."""
    engine = engine_of(ctx)
    migration = migrate_or_fail(engine)
    where = engine.url.render_as_string(hide_password=True)
    if migration.upgraded:
        console.print(
            f"Database schema migrated from {migration.before or 'empty'} to "
            f"{migration.after} ({where})."
        )
    else:
        console.print(f"Database schema already at {migration.after}, nothing to do ({where}).")
    settings = settings_of(ctx)
    if settings.mlflow_tracking_uri is None:
        # The embedded registry's tables too, once, before jobs and servers race to make them.
        from sfmlops.adapters import mlflow_registry  # noqa: PLC0415 - imports mlflow

        mlflow_registry.initialise_embedded_store(settings)
        console.print(f"Embedded MLflow store ready ({settings.effective_mlflow_tracking_uri}).")


def load_data(
    ctx: typer.Context,
    path: Path = typer.Option(
        ROSSMANN_DIR,
        "--path",
        help="Folder with train.csv[.gz] and store.csv (+ store_states.csv); default: the bundled Rossmann data.",
        file_okay=False,
    ),
) -> None:
    """Validate a folder of sales and store files, then upsert it (all or nothing)."""
    engine = migrated_engine_of(ctx)
    checked = load_into(engine, path, sales_limits(settings_of(ctx)))
    record_command(engine, "data.load", {"path": str(path), "sales_rows": checked.sales_rows})
    print_summary(engine)


def load_plan(
    ctx: typer.Context,
    path: Path = typer.Argument(
        ...,
        help="CSV in the competition's test format: Store,Date,Open,Promo,StateHoliday,"
        "SchoolHoliday (Id and DayOfWeek optional).",
        dir_okay=False,
    ),
) -> None:
    """Store the plan of known future covariates (promotions, openings, holidays) from a file.

    Forecasts (API, pipeline, dashboard) use a store's planned day instead of the derived
    default; a day planned again is replaced. All or nothing: a bad row changes nothing.
    """
    engine = migrated_engine_of(ctx)
    try:
        plan = forecast_files.read_plan_file(path, covariate_plan.known_store_ids(engine))
        written = covariate_plan.store_plan(
            engine, plan, f"cli:{getpass.getuser()}", source=str(path)
        )
    except (loading.DataFileError, DataFileNotFoundError) as error:
        fail(str(error))
    except SQLAlchemyError as error:
        fail(f"database error, nothing was written: {error.__class__.__name__}: {error}")
    first = pd.Timestamp(plan[columns.SALES_DATE].min()).date()
    last = pd.Timestamp(plan[columns.SALES_DATE].max()).date()
    console.print(
        f"Plan stored: {written} store-days of {plan[columns.STORE_ID].nunique()} store(s), "
        f"{first} to {last}."
    )


def synth(
    stores: int = typer.Option(
        ..., "--stores", min=1, help="The first N stores of the source by id."
    ),
    products: int = typer.Option(..., "--products", min=1, help="Products per store."),
    days: int = typer.Option(
        365, "--days", min=1, help="Days of history up to the source's last day."
    ),
    out: Path = typer.Option(
        Path("synthetic"),
        "--out",
        help="Folder to write train.csv.gz, store.csv, store_states.csv into.",
        file_okay=False,
    ),
    seed: int = typer.Option(0, "--seed", help="The same options and seed write the same rows."),
    source: Path = typer.Option(
        ROSSMANN_DIR,
        "--source",
        help="Folder of real one-product store sales to derive from.",
        file_okay=False,
    ),
) -> None:
    """Write a synthetic multi-product dataset (stores x products series) that load-data reads."""
    try:
        with Progress(
            TextColumn("Synthesising"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("synth", total=stores)
            written = synthetic_data.write_synthetic_dataset(
                source,
                out,
                stores=stores,
                products=products,
                days=days,
                seed=seed,
                on_store=lambda done: progress.update(task, completed=done),
            )
    except (loading.DataFileError, DataFileNotFoundError, ValueError) as error:
        fail(str(error))
    console.print(
        f"Wrote {written.series:,} series ({written.stores:,} stores x {written.products:,} products), "
        f"{written.rows:,} rows, {written.first_day} .. {written.last_day}, into {written.folder}."
    )


def show_stores(
    ctx: typer.Context,
    limit: int | None = typer.Option(None, "--limit", min=1, help="Show at most this many stores."),
) -> None:
    """List the stores with their metadata."""
    engine = migrated_engine_of(ctx)
    with engine.connect() as connection:
        stores = store_records.list_stores(connection)
    if stores.empty:
        fail("no stores yet: run `sfmlops load-data` first")
    shown = stores.head(limit) if limit else stores
    table = Table(
        "store",
        "type",
        "assortment",
        "state",
        "competition (m)",
        "promo2",
        title=f"{len(stores)} stores",
    )
    for row in shown.itertuples(index=False):
        distance = getattr(row, columns.COMPETITION_DISTANCE)
        table.add_row(
            str(getattr(row, columns.STORE_ID)),
            str(getattr(row, columns.STORE_TYPE) or ""),
            str(getattr(row, columns.ASSORTMENT) or ""),
            str(getattr(row, columns.STATE) or ""),
            "" if pd.isna(distance) else f"{distance:,.0f}",
            "yes" if getattr(row, columns.PROMO2) else "no",
        )
    console.print(table)


def load_into(
    engine: Engine, path: Path, limits: SalesLimits | None = None
) -> loading.CheckedFolder:
    """Validate and write a folder, with progress; exits cleanly on bad input."""
    try:
        with console.status(f"Validating {path} ..."):
            with engine.connect() as connection:
                known = store_records.store_ids(connection)
            checked = loading.check_folder(path, known, limits)
        with Progress(
            TextColumn("Writing sales"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("write", total=checked.sales_rows)
            loading.write_checked(engine, checked, lambda rows: progress.advance(task, rows))
    except (loading.DataFileError, DataFileNotFoundError, ValueError) as error:
        fail(str(error))
    except SQLAlchemyError as error:
        fail(f"database error, nothing was written: {error.__class__.__name__}: {error}")
    return checked


def print_summary(engine: Engine) -> None:
    """Print what the sales table holds."""
    with engine.connect() as connection:
        summary = sales_records.sales_summary(connection)
        store_count = len(store_records.store_ids(connection))
    table = Table(
        "stores", "series", "sales rows", "first date", "last date", title="Sales in the database"
    )
    table.add_row(
        f"{store_count:,}",
        f"{summary.series:,}",
        f"{summary.rows:,}",
        str(summary.first_date or "-"),
        str(summary.last_date or "-"),
    )
    console.print(table)
