"""The `sfmlops` command line."""

from __future__ import annotations

import sys

import typer
import typer.rich_utils

from sfmlops.cli import config
from sfmlops.cli.command_index import LazyCommandGroup
from sfmlops.cli.context import output_width

# Commands are not registered here: LazyCommandGroup imports each one from
# sfmlops.cli.command_index.COMMANDS when it runs, so `--help` stays light.
app = typer.Typer(
    name="sfmlops",
    cls=LazyCommandGroup,
    help="Sales forecast MLOps at scale: load sales, train, register, serve and monitor forecasts.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.callback()(config.load_settings)


def main() -> None:
    """Entry point of the `sfmlops` console script."""
    # Help is rendered by typer's own console: give it the width our console uses.
    typer.rich_utils.MAX_WIDTH = typer.rich_utils.MAX_WIDTH or output_width(sys.stdout)
    app()
