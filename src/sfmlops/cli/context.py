"""What every command shares: the settings built once per process, the console, failing cleanly."""

from __future__ import annotations

import getpass
import os
import sys
import time
from collections.abc import Callable
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


def wait_for(what: str, answers: Callable[[], None], seconds: int) -> None:
    """Call `answers` until it stops raising, for at most `seconds`; fail naming `what`.

    For a process started together with the services it needs (a Compose stack, a Helm
    release): one line when it starts waiting, with the reason, and one when `what` answers.
    """
    started = time.monotonic()
    announced = False
    while True:
        try:
            answers()
        except Exception as error:  # any failure to answer: try again until the deadline
            waited = time.monotonic() - started
            reason = next(iter(str(error).strip().splitlines()), error.__class__.__name__)
            if waited >= seconds:
                fail(f"{what} did not answer within {seconds} s: {error}")
            if not announced:
                # One line each, as a log reads best (soft_wrap: rich would cut it at 80).
                console.print(
                    f"waiting up to {seconds} s for {what} ({reason}) ...",
                    soft_wrap=True,
                    highlight=False,
                )
                announced = True
            time.sleep(min(2.0, max(0.0, seconds - waited)))
            continue
        if announced:
            console.print(
                f"{what} answered after {time.monotonic() - started:.0f} s",
                soft_wrap=True,
                highlight=False,
            )
        return


def wait_for_database(engine: Engine, seconds: int) -> None:
    """Wait up to `seconds` for the database of `engine` to accept a connection (see `wait_for`).

    Until the server is up and has created the application's role and database, a connection
    is refused or its login rejected: both are waited out alike.
    """

    def answers() -> None:
        with engine.connect():
            pass

    wait_for(f"the database at {engine.url.render_as_string(hide_password=True)}", answers, seconds)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `message` on stderr and exit with `code`."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def record_command(engine: Engine, action: str, detail: dict[str, Any] | None = None) -> None:
    """Add what a command changed to the audit log, under the operating-system user."""
    with engine.begin() as connection:
        audit.record(connection, f"cli:{getpass.getuser()}", action, detail)
