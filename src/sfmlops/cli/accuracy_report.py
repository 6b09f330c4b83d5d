"""`sfmlops accuracy`: realized accuracy of the forecasts issued, against the actuals since."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pandas as pd
import typer
from rich.table import Table

from sfmlops.cli.context import console, fail, migrated_engine_of, settings_of
from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.services import realized_accuracy
from sfmlops.services.status import as_of_date

COLUMNS = (*metrics.REPORTED, metrics.DAYS)


def show_accuracy(
    ctx: typer.Context,
    days: int = typer.Option(
        28, "--days", min=1, max=realized_accuracy.MAX_DAYS, help="Days up to the as-of date."
    ),
    store: int | None = typer.Option(None, "--store", min=0, help="One store (default: all)."),
    rescore: bool = typer.Option(
        False, "--rescore", help="Score those days' issued forecasts again first."
    ),
    prune: bool = typer.Option(
        False,
        "--prune",
        help="Delete issued forecasts and scores older than SFMLOPS_MONITORING_RETENTION_DAYS.",
    ),
) -> None:
    """Realized accuracy: RMSPE, MAPE, bias and interval coverage of the forecasts issued,
    overall, by horizon, by model version, per day and (all stores) the 10 worst stores."""
    settings = settings_of(ctx)
    engine = migrated_engine_of(ctx)
    with engine.connect() as connection:
        end = as_of_date(settings, connection)
    if end is None:
        fail("no sales in the database: run `sfmlops load-data` first")
    if rescore:
        window = {end - dt.timedelta(days=offset) for offset in range(days)}
        scored = realized_accuracy.score_actuals(engine, window)
        console.print(f"Scored {scored:,} forecasts")
    if prune:
        first_kept, deleted = realized_accuracy.prune(
            engine, end, settings.monitoring_retention_days
        )
        console.print(
            f"Deleted {deleted:,} issued forecasts and scores of days before {first_kept}"
        )
    with engine.connect() as connection:
        report = realized_accuracy.realized_accuracy(connection, end, days, store)
    which = f"store {store}" if store is not None else "every store"
    console.print(f"Realized accuracy, {which}, {report.start} to {report.end}")
    if not report.overall[metrics.DAYS]:
        console.print("No forecast scored in that window yet.")
        return
    console.print(_table("overall", pd.DataFrame([{"overall": "all", **report.overall}])))
    console.print(_table(columns.HORIZON_DAYS, report.by_horizon))
    console.print(_table("model_version", report.by_version))
    console.print(_table(columns.SALES_DATE, report.by_day))
    if store is None:
        worst = report.by_store.sort_values(metrics.RMSPE, ascending=False).head(10)
        console.print(_table(columns.STORE_ID, worst, "10 least accurate stores"))


def _table(key: str, frame: pd.DataFrame, title: str | None = None) -> Table:
    table = Table(key, *COLUMNS, title=title)
    for row in frame.to_dict("records"):
        table.add_row(key_text(row[key]), *(figure_text(name, row[name]) for name in COLUMNS))
    return table


def key_text(value: Any) -> str:
    return f"{value:%Y-%m-%d}" if isinstance(value, pd.Timestamp) else str(value)


def figure_text(name: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if name == metrics.DAYS:
        return f"{int(value):,}"
    if name == metrics.BIAS:
        return f"{value:+,.0f}"
    return f"{value:.3f}" if name in (metrics.RMSPE, metrics.MAPE) else f"{value:.0%}"
