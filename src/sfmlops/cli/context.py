"""What every command shares: the settings built once per process, the console, failing cleanly."""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any, NoReturn, TextIO

import typer
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sfmlops.adapters.db import audit
from sfmlops.adapters.db.engine import Migration, make_engine, migrate
from sfmlops.settings import Settings

# Piped output (a file, `less`, a CI log) keeps whole ids and option names: rich would cut
# tables and help at 80 columns when it cannot ask a terminal. COLUMNS still wins.
PIPED_WIDTH = 250


def output_width(stream: TextIO) -> int | None:
    """The width to render for `stream`: the terminal's (None), or `PIPED_WIDTH` when piped."""
    if stream.isatty() or os.environ.get("COLUMNS"):
        return None
    return PIPED_WIDTH


console = Console(width=output_width(sys.stdout))
errors = Console(stderr=True, width=output_width(sys.stderr))


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the root callback built for this process."""
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):  # a command invoked without the root callback
        settings = Settings()
        ctx.find_root().obj = settings
    return settings


def engine_of(ctx: typer.Context) -> Engine:
    """A database engine for the configured URL (created on demand, never on import)."""
    settings = settings_of(ctx)
    settings.ensure_home()
    return make_engine(settings.effective_database_url)


def migrated_engine_of(ctx: typer.Context) -> Engine:
    """The engine of `engine_of`, its schema brought to the newest revision first.

    The command line's migration policy: a command that uses the database migrates it
    before its first query (idempotent, under the migration lock of `migrate`), so a fresh
    database works without a separate step; exits cleanly when the database fails.
    """
    engine = engine_of(ctx)
    migrate_or_fail(engine)
    return engine


def migrate_or_fail(engine: Engine) -> Migration:
    """Migrate the schema to the newest revision; exits cleanly when the database fails."""
    try:
        return migrate(engine)
    except SQLAlchemyError as error:
        fail(
            f"cannot prepare the database at {engine.url.render_as_string(hide_password=True)}: {error}"
        )


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `message` on stderr and exit with `code`."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def record_command(engine: Engine, action: str, detail: dict[str, Any] | None = None) -> None:
    """Add what a command changed to the audit log, under the operating-system user."""
    with engine.begin() as connection:
        audit.record(connection, f"cli:{getpass.getuser()}", action, detail)
