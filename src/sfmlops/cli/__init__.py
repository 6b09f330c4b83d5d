"""The `sfmlops` command line."""

from __future__ import annotations

import sys

import typer
import typer.rich_utils

from sfmlops.cli import (
    accuracy_report,
    bootstrap,
    check,
    config,
    dashboard,
    data,
    database_backup,
    dead_letter_list,
    demo,
    forecast_commands,
    job_list,
    loop_replay,
    pipeline,
    serve,
    streaming,
    tracking,
)
from sfmlops.cli.context import output_width

app = typer.Typer(
    name="sfmlops",
    help="Sales forecast MLOps at scale: load sales, train, register, serve and monitor forecasts.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.callback()(config.load_settings)
app.command("config")(config.show_config)
app.command("init")(data.init_database)
app.command("bootstrap")(bootstrap.bootstrap)
app.command("load-data")(data.load_data)
app.command("load-plan")(data.load_plan)
app.command("stores")(data.show_stores)
app.command("synth")(data.synth)
app.command("demo")(demo.run_demo)
app.command("backtest")(forecast_commands.backtest_command)
app.command("train")(forecast_commands.train_command)
app.command("predict")(forecast_commands.predict_command)
app.command("serve")(serve.serve)
app.command("ui")(dashboard.run_ui)
app.command("jobs")(job_list.list_jobs)
app.command("accuracy")(accuracy_report.show_accuracy)
app.command("replay")(loop_replay.replay_command)
app.command("dead-letters")(dead_letter_list.list_dead_letters)
app.command("backup")(database_backup.backup_command)
app.command("restore")(database_backup.restore_command)
app.command("mlflow")(tracking.run_mlflow_server)
app.command("produce")(streaming.produce)
app.command("stream")(streaming.stream)
app.add_typer(check.app, name="check")
app.add_typer(pipeline.app, name="pipeline")


def main() -> None:
    """Entry point of the `sfmlops` console script."""
    # Help is rendered by typer's own console: give it the width our console uses.
    typer.rich_utils.MAX_WIDTH = typer.rich_utils.MAX_WIDTH or output_width(sys.stdout)
    app()
