"""`sfmlops backup` and `sfmlops restore`: a copy of the sales database, and back."""

from __future__ import annotations

from pathlib import Path

import typer

from sfmlops.adapters.db.backup import BackupError, backup, restore
from sfmlops.cli.context import console, engine_of, fail, record_command, settings_of


def backup_command(
    ctx: typer.Context,
    to: Path = typer.Argument(..., help="File to write (PostgreSQL: pg_dump's custom format)."),
) -> None:
    """Write a consistent copy of the sales database (stores, sales, jobs, stream offsets)."""
    settings = settings_of(ctx)
    try:
        written = backup(settings.effective_database_url, to)
    except BackupError as error:
        fail(str(error))
    console.print(f"Backed up to {written} ({written.stat().st_size:,} bytes).")


def restore_command(
    ctx: typer.Context,
    source: Path = typer.Argument(..., help="A file written by `sfmlops backup`."),
    yes: bool = typer.Option(False, "--yes", help="Replace the database's contents (required)."),
) -> None:
    """Replace the sales database's contents with a backup (the stream resumes from its offsets)."""
    if not yes:
        fail("restore replaces every table's contents: pass --yes to go on")
    settings = settings_of(ctx)
    try:
        restore(settings.effective_database_url, source)
    except BackupError as error:
        fail(str(error))
    record_command(engine_of(ctx), "database.restore", {"source": str(source)})
    console.print(f"Restored from {source}.")
