"""Settings and configuration commands."""

from __future__ import annotations

import json

import typer
from pydantic import ValidationError
from rich.table import Table

from sfmlops.cli.context import console, fail, settings_of
from sfmlops.settings import Settings


def load_settings(ctx: typer.Context) -> None:
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
