"""Settings and configuration commands."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.table import Table

from sfmlops import __version__
from sfmlops.cli.context import console, fail, settings_of
from sfmlops.settings import Settings


def show_version(asked: bool) -> None:
    """Print the package version and the git commit of the source tree, then exit."""
    if not asked:
        return
    console.print(f"sfmlops {__version__} (commit {source_commit()})", highlight=False)
    raise typer.Exit()


def source_commit() -> str:
    """The commit of the git checkout the package runs from, or "unknown" (e.g. a wheel)."""
    source = Path(__file__).resolve().parent
    try:
        found = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return found.stdout.strip() if found.returncode == 0 else "unknown"


def load_settings(
    ctx: typer.Context,
    version: bool = typer.Option(
        False,
        "--version",
        callback=show_version,
        is_eager=True,
        help="Print the version and git commit, then exit.",
    ),
) -> None:
    """Sales forecast MLOps at scale: load sales, train, register, serve and monitor forecasts.

    Configuration comes from SFMLOPS_* environment variables or a .env file;
    `sfmlops config` shows what is in effect.
    """
    try:
        ctx.obj = Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"SFMLOPS_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors()
        )
        fail(f"invalid configuration: {problems}")


def show_config(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the effective settings, secrets masked."""
    values = settings_of(ctx).masked()
    if as_json:
        console.print_json(json.dumps(values))
        return
    table = Table("setting", "environment variable", "value", title="sfmlops settings")
    for name, value in values.items():
        table.add_row(name, f"SFMLOPS_{name.upper()}", str(value))
    console.print(table)
