"""`sfmlops check`: data-quality checks after an ingest or a batch forecast (the DAGs run them).

Each prints its report as JSON on stdout and exits 1, naming every breach, when a threshold
is crossed, so a scheduler task, a pod or a shell fails loudly on the same rule.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import typer

from sfmlops.cli.context import console, fail, migrated_engine_of, settings_of
from sfmlops.services import data_quality
from sfmlops.services.status import as_of_date

app = typer.Typer(
    help="Data-quality checks: exit 1 when a threshold is crossed.", no_args_is_help=True
)


@app.command("ingest")
def check_ingest(
    ctx: typer.Context,
    sales_date: dt.datetime | None = typer.Option(
        None,
        "--sales-date",
        formats=["%Y-%m-%d"],
        help="The sales day to check (YYYY-MM-DD); default: the as-of date.",
    ),
    dead_letters_since: str | None = typer.Option(
        None,
        "--dead-letters-since",
        help="Count dead letters received since this time (ISO 8601, UTC when naive); "
        "default: 24 hours ago.",
    ),
    min_rows: int = typer.Option(1, min=0, help="Fail below this many rows for the day."),
    max_missing_stores: int = typer.Option(
        0, min=0, help="Fail above this many stores without a record for the day."
    ),
    max_dead_letters: int = typer.Option(
        0, min=0, help="Fail above this many dead letters in the window."
    ),
) -> None:
    """Rows landed per store for a day, stores missing it, dead letters since the last run."""
    since = _since(dead_letters_since)
    engine = migrated_engine_of(ctx)
    with engine.connect() as connection:
        day = sales_date.date() if sales_date else as_of_date(settings_of(ctx), connection)
        if day is None:
            fail("no sales loaded yet: give --sales-date or load sales first")
        report = data_quality.ingest_report(connection, day, since)
    thresholds = data_quality.IngestThresholds(min_rows, max_missing_stores, max_dead_letters)
    breaches = data_quality.ingest_breaches(report, thresholds)
    rows = sorted(report.rows_per_store.values())
    _print(
        {
            "sales_date": report.sales_date.isoformat(),
            "stores": report.stores,
            "rows": report.rows,
            "stores_with_rows": len(rows),
            "rows_per_store_min": rows[0] if rows else 0,
            "rows_per_store_max": rows[-1] if rows else 0,
            "missing_stores": report.missing_stores,
            "dead_letters": report.dead_letters,
            "dead_letters_since": report.dead_letters_since.isoformat(),
            "thresholds": dataclasses.asdict(thresholds),
            "breaches": breaches,
        }
    )
    if breaches:
        fail(f"ingest check failed for {report.sales_date}: " + "; ".join(breaches))


@app.command("forecasts")
def check_forecasts(
    ctx: typer.Context,
    model_version: str | None = typer.Option(
        None, help="The model version whose forecasts to check; default: the champion."
    ),
    horizon_days: int = typer.Option(7, min=1, help="Days every series must have."),
    max_incomplete_series: int = typer.Option(
        0, min=0, help="Fail above this many series without `horizon_days` forecast days."
    ),
) -> None:
    """Every series with sales has `horizon_days` forecast days for the model version."""
    version = model_version or _champion_version(ctx)
    engine = migrated_engine_of(ctx)
    with engine.connect() as connection:
        report = data_quality.forecast_report(connection, version, horizon_days)
    breaches = data_quality.forecast_breaches(report, max_incomplete_series)
    _print(
        {
            "model_version": report.model_version,
            "horizon_days": report.horizon_days,
            "series": report.series,
            "complete_series": report.complete_series,
            "rows": report.rows,
            "incomplete_series": len(report.incomplete),
            "breaches": breaches,
        }
    )
    if breaches:
        fail("forecast check failed: " + "; ".join(breaches))


def _champion_version(ctx: typer.Context) -> str:
    from sfmlops.adapters import mlflow_registry  # noqa: PLC0415 - imports mlflow

    try:
        champion = mlflow_registry.version_with_alias(
            mlflow_registry.connect(settings_of(ctx)), mlflow_registry.CHAMPION
        )
    except mlflow_registry.RegistryUnavailableError as error:
        fail(f"cannot find the champion: {error}; give --model-version")
    if champion is None:
        fail("no champion model yet: give --model-version or run `sfmlops train`")
    return champion.version


def _since(text: str | None) -> dt.datetime:
    if not text:
        return dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(f"--dead-letters-since: not an ISO 8601 time: {text!r}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _print(report: dict[str, object]) -> None:
    # Plain JSON, one line: the task log shows it and a pod's output can be parsed.
    console.print(json.dumps(report), markup=False, highlight=False, soft_wrap=True)
