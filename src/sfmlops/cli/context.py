"""What every command shares: the settings built once per process, the console, failing cleanly."""

from __future__ import annotations

import getpass
from typing import Any, NoReturn

import typer
from rich.console import Console
from sqlalchemy import Engine

from sfmlops.adapters.db import audit
from sfmlops.adapters.db.engine import make_engine
from sfmlops.settings import Settings

console = Console()
errors = Console(stderr=True)


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


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `message` on stderr and exit with `code`."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def record_command(engine: Engine, action: str, detail: dict[str, Any] | None = None) -> None:
    """Add what a command changed to the audit log, under the operating-system user."""
    with engine.begin() as connection:
        audit.record(connection, f"cli:{getpass.getuser()}", action, detail)
