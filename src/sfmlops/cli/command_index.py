"""Which module implements each `sfmlops` command, loaded only when the command runs.

Importing every command module up front pulls in pandas, MLflow, Ray and the API
and made even `sfmlops --help` take seconds. The root group lists commands from
`COMMANDS` and imports a command's module only when that command is resolved.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import typer
import typer.main
from typer import _click
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True)
class CommandEntry:
    """Where a command lives and the one line `sfmlops --help` shows for it.

    Attributes:
        module: Module under `sfmlops.cli` that defines the command.
        attribute: A command function, or a `typer.Typer` for a command group.
        short_help: Must equal the first paragraph of the command's own help
            (tests/unit/test_command_index.py checks it).
    """

    module: str
    attribute: str
    short_help: str


COMMANDS: dict[str, CommandEntry] = {
    "config": CommandEntry(
        "config",
        "show_config",
        "Print the effective settings, secrets masked.",
    ),
    "init": CommandEntry(
        "data",
        "init_database",
        "Create or upgrade the database schema (idempotent; concurrent runs take turns).",
    ),
    "bootstrap": CommandEntry(
        "bootstrap",
        "bootstrap",
        "Migrate, load the bundled data into an empty database, train if no champion, forecast.",
    ),
    "load-data": CommandEntry(
        "data",
        "load_data",
        "Validate a folder of sales and store files, then upsert it (all or nothing).",
    ),
    "load-plan": CommandEntry(
        "data",
        "load_plan",
        "Store the plan of known future covariates (promotions, openings, holidays) from a file.",
    ),
    "stores": CommandEntry(
        "data",
        "show_stores",
        "List the stores with their metadata.",
    ),
    "synth": CommandEntry(
        "data",
        "synth",
        "Write a synthetic multi-product dataset (stores x products series) that load-data reads.",
    ),
    "demo": CommandEntry(
        "demo",
        "run_demo",
        "Load the data, train and register every store's model, forecast, then serve it all.",
    ),
    "backtest": CommandEntry(
        "forecast_commands",
        "backtest_command",
        "Compare models on rolling and season backtests; write a report under HOME/reports.",
    ),
    "train": CommandEntry(
        "forecast_commands",
        "train_command",
        "Train, track in MLflow and register a version of sfmlops-forecaster (champion or challenger).",
    ),
    "predict": CommandEntry(
        "forecast_commands",
        "predict_command",
        "Forecast the rows of a future file with the current champions.",
    ),
    "serve": CommandEntry(
        "serve",
        "serve",
        "Run the forecast API (OpenAPI docs at /docs).",
    ),
    "ui": CommandEntry(
        "dashboard",
        "run_ui",
        "Run the dashboard; it talks to the API at SFMLOPS_API_URL only.",
    ),
    "jobs": CommandEntry(
        "job_list",
        "list_jobs",
        "List recent training jobs, newest first, with status and progress.",
    ),
    "accuracy": CommandEntry(
        "accuracy_report",
        "show_accuracy",
        "Realized accuracy: RMSPE, MAPE, bias and interval coverage of the forecasts issued,\n"
        "overall, by horizon, by model version, per day and (all stores) the 10 worst stores.",
    ),
    "replay": CommandEntry(
        "loop_replay",
        "replay_command",
        "Replay days of the bundled data through the loop: load the history up to the day before\n"
        "--start and train (on a fresh home), then each day issue the forecasts, ingest the day's\n"
        "actuals (scored as they land), run the ingest check and the stale-store retrain, and\n"
        "advance the as-of date. Ends with realized accuracy per day and version and the retrains.",
    ),
    "dead-letters": CommandEntry(
        "dead_letter_list",
        "list_dead_letters",
        "List refused records, newest first: when, from where, why, and what was received.",
    ),
    "backup": CommandEntry(
        "database_backup",
        "backup_command",
        "Write a consistent copy of the sales database (stores, sales, jobs, stream offsets).",
    ),
    "restore": CommandEntry(
        "database_backup",
        "restore_command",
        "Replace the sales database's contents with a backup (the stream resumes from its offsets).",
    ),
    "mlflow": CommandEntry(
        "tracking",
        "run_mlflow_server",
        "Run `mlflow server` (point SFMLOPS_MLFLOW_TRACKING_URI at http://HOST:PORT to use it).",
    ),
    "produce": CommandEntry(
        "streaming",
        "produce",
        "Send one JSON sales event per (store, date) record to the sales topic.",
    ),
    "stream": CommandEntry(
        "streaming",
        "stream",
        "Stream sales events from Kafka into the database with Spark, exactly once in effect.",
    ),
    "check": CommandEntry(
        "check",
        "app",
        "Data-quality checks: exit 1 when a threshold is crossed.",
    ),
    "pipeline": CommandEntry(
        "pipeline",
        "app",
        "Batch pipelines: forecast, weekly, retrain-stale.",
    ),
}


def load_command(name: str) -> _click.Command:
    """Import the module behind command `name` and build its click command.

    Raises:
        KeyError: `name` is not in `COMMANDS`.
        TypeError: the entry names something that is neither a function nor a `typer.Typer`.
    """
    entry = COMMANDS[name]
    implementation = getattr(
        importlib.import_module(f"sfmlops.cli.{entry.module}"), entry.attribute
    )
    command: _click.Command
    if isinstance(implementation, typer.Typer):
        # A group, as `add_typer` made it: get_command would add completion options.
        command = typer.main.get_group(implementation)
    elif callable(implementation):
        single = typer.Typer(add_completion=False)
        single.command(name)(implementation)
        command = typer.main.get_command(single)
    else:
        raise TypeError(f"sfmlops.cli.{entry.module}.{entry.attribute} is not a command")
    command.name = name
    return command


class LazyCommandGroup(TyperGroup):
    """Root group that imports a command's module only when that command is resolved.

    While help is formatted, commands are stand-ins carrying only the short help
    from `COMMANDS`, so the listing never imports a command module.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._listing = False

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return [*self.commands, *(name for name in COMMANDS if name not in self.commands)]

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        if self._listing:
            return TyperCommand(name=cmd_name, help=COMMANDS[cmd_name].short_help)
        command = load_command(cmd_name)
        self.commands[cmd_name] = command
        return command

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        with self._listing_only():
            super().format_help(ctx, formatter)

    @contextmanager
    def _listing_only(self) -> Iterator[None]:
        self._listing = True
        try:
            yield
        finally:
            self._listing = False
