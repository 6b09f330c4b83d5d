"""Streaming commands: produce sales events to Kafka, stream them into the database."""

from __future__ import annotations

import datetime as dt
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sfmlops.adapters import kafka
from sfmlops.adapters.db import sales_records
from sfmlops.adapters.files import DataFileNotFoundError
from sfmlops.cli.context import (
    console,
    engine_of,
    fail,
    migrate_or_fail,
    migrated_engine_of,
    settings_of,
    wait_for_database,
)
from sfmlops.core import columns
from sfmlops.services import loading, producing
from sfmlops.services.ingestion import sales_limits
from sfmlops.services.stream_test_hooks import StreamFaultHooks
from sfmlops.settings import Settings

if TYPE_CHECKING:
    from sfmlops.adapters.spark import KafkaSource
    from sfmlops.services.stream_ingestion import BatchReport
    from sfmlops.services.stream_metrics import StreamMetrics

LIVE_DEFAULT_RATE = 0.1  # one event every 10 s, as the reference's live feed


def produce(
    ctx: typer.Context,
    *,
    file: Path | None = typer.Option(
        None, "--file", dir_okay=False, help="CSV of sales (Rossmann headers or domain names)."
    ),
    from_db: bool = typer.Option(False, "--from-db", help="Send sales stored in the database."),
    start: dt.datetime | None = typer.Option(
        None, "--start", formats=["%Y-%m-%d"], help="First sales date to send (inclusive)."
    ),
    end: dt.datetime | None = typer.Option(
        None, "--end", formats=["%Y-%m-%d"], help="Last sales date to send (inclusive)."
    ),
    rate: float | None = typer.Option(
        None, "--rate", min=0.001, help="Events per second (default: --max-rate; live: 0.1)."
    ),
    max_rate: bool = typer.Option(False, "--max-rate", help="Send as fast as Kafka takes them."),
    live: bool = typer.Option(
        False,
        "--live",
        help="Replay each store's latest record re-dated to the day after the as-of date, "
        "one every 10 s unless --rate says otherwise.",
    ),
) -> None:
    """Send one JSON sales event per (store, date) record to the sales topic."""
    settings = settings_of(ctx)
    bootstrap = _bootstrap_servers(settings)
    if (file is None) == (not from_db):
        fail("give exactly one source: --file PATH or --from-db")
    if rate is not None and max_rate:
        fail("--rate and --max-rate exclude each other")
    first = start.date() if start else None
    last = end.date() if end else None
    try:
        if file is not None:
            sales = producing.between(producing.sales_from_file(file), first, last)
        else:
            engine = migrated_engine_of(ctx)
            # A live day sends each series' latest record only: the database picks them.
            read = producing.latest_sales_from_database if live else producing.sales_from_database
            sales = read(engine, first, last)
    except (loading.DataFileError, DataFileNotFoundError, ValueError) as error:
        fail(str(error))
    except SQLAlchemyError as error:
        fail(f"cannot read sales from the database: {error}")
    if sales.empty:
        fail("no sales records in the selection: nothing to send")
    if live:
        as_of = settings.as_of or _latest_date(ctx, sales, from_db)
        sales = producing.live_replay(sales, as_of)
        rate = None if max_rate else (rate or LIVE_DEFAULT_RATE)
        console.print(f"Live replay: {len(sales):,} records dated {as_of + dt.timedelta(days=1)}")
    else:
        sales = producing.in_event_order(sales)
        rate = None if max_rate else rate
    with Progress(
        TextColumn(f"Sending to {settings.kafka_topic}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("send", total=len(sales))
        try:
            sent = producing.produce_sales(
                bootstrap,
                settings.kafka_topic,
                settings.kafka_topic_partitions,
                sales,
                security=settings.kafka_security,
                rate=rate,
                on_ack=lambda count: progress.advance(task, count),
            )
        except Exception as error:  # any Kafka failure: report it, never a traceback
            fail(f"sending to Kafka at {bootstrap} failed: {error}")
    console.print(f"Sent {sent:,} events to {settings.kafka_topic} on {bootstrap}.")


def stream(
    ctx: typer.Context,
    *,
    once: bool = typer.Option(
        False, "--once", help="Process what the topic holds now, then stop (the daily run)."
    ),
    continuous: bool = typer.Option(
        False, "--continuous", help="Keep processing new events until stopped (SIGTERM/Ctrl-C)."
    ),
    interval: str = typer.Option(
        "2s", "--interval", help="Micro-batch interval of --continuous, e.g. 500ms, 2s, 1m."
    ),
    from_earliest: bool = typer.Option(
        False,
        "--from-earliest",
        help="Re-apply every event the topic still holds instead of resuming where the "
        "database left off (the result is the same as applying each once).",
    ),
    wait: int = typer.Option(
        0,
        "--wait",
        min=0,
        help="Seconds to wait for the database to accept a connection (when started together "
        "with it); default: fail at once.",
    ),
) -> None:
    """Stream sales events from Kafka into the database with Spark, exactly once in effect.

    A run resumes after the last batch committed to the database: the database keeps the
    Kafka offsets it has applied, in the same transaction as the records.
    """
    # Spark is imported here only: the images of the other commands (API, dashboard, producer)
    # do not install it (the "spark" extra).
    from sfmlops.adapters import spark  # noqa: PLC0415
    from sfmlops.services import stream_ingestion  # noqa: PLC0415

    settings = settings_of(ctx)
    bootstrap = _bootstrap_servers(settings)
    if once == continuous:
        fail("choose one of --once and --continuous")
    try:
        trigger = None if once else spark.spark_interval(interval)
        jars = spark.connector_jars(settings.jars_dir)
        faults = StreamFaultHooks.from_environment()
    except (ValueError, spark.ConnectorJarsError) as error:
        fail(str(error))
    engine = engine_of(ctx)
    if wait:
        # Started with its database (a Helm release, a Compose stack), the job would otherwise
        # exit and be restarted with a growing back-off until the server and its roles exist.
        wait_for_database(engine, wait)
    migrate_or_fail(engine)
    source = spark.KafkaSource(
        bootstrap,
        settings.kafka_topic,
        settings.stream_max_batch_events,
        security=settings.kafka_security,
    )
    checkpoint = settings.checkpoints_dir / settings.kafka_topic
    console.print(
        f"Streaming {settings.kafka_topic} from {bootstrap} into "
        f"{engine.url.render_as_string(hide_password=True)}"
        + (" from the earliest offset" if from_earliest else "")
    )
    totals = {"received": 0, "upserted": 0, "dead_lettered": 0}
    metrics = _serve_metrics(settings)
    if metrics is not None:
        metrics.keep_measuring(
            lambda: _measure_lag(metrics, engine, source), settings.stream_lag_seconds
        )

    def report(batch: BatchReport) -> None:
        if metrics is not None:
            metrics.observe(batch)
            _measure_lag(metrics, engine, source)
        if not batch.received:
            return
        totals["received"] += batch.received
        totals["upserted"] += batch.upserted
        totals["dead_lettered"] += batch.dead_lettered
        console.print(batch.describe(), highlight=False, soft_wrap=True)

    try:
        stream_ingestion.run_stream(
            engine,
            source,
            checkpoint,
            jars,
            interval=trigger,
            on_batch=report,
            from_earliest=from_earliest,
            faults=faults,
            limits=lambda: sales_limits(settings),
            failure_log=settings.stream_log_file,
        )
    except spark.StreamFailedError as error:
        fail(f"the stream stopped: {error}{_logged(settings.stream_log_file, error)}")
    console.print(
        f"Done: {totals['received']:,} records, {totals['upserted']:,} upserted, "
        f"{totals['dead_lettered']:,} dead-lettered."
    )


def _logged(log_file: Path, error: BaseException) -> str:
    """Append `error` with its causes (tracebacks, Spark's report) to `log_file`; returns the
    words that point there, or nothing when the file cannot be written."""
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a") as log:
            log.write(f"{dt.datetime.now(dt.UTC).isoformat()} the stream stopped\n")
            log.writelines(traceback.format_exception(error))
    except OSError:
        return ""
    return f" (details in {log_file})"


def _serve_metrics(settings: Settings) -> StreamMetrics | None:
    """The stream job's metrics, served on SFMLOPS_STREAM_METRICS_PORT when it is set."""
    from sfmlops.services.stream_metrics import StreamMetrics  # noqa: PLC0415 - imports Spark

    if settings.stream_metrics_port is None:
        return None
    metrics = StreamMetrics()
    try:
        metrics.serve(settings.stream_metrics_port)
    except OSError as error:
        fail(f"cannot serve metrics on port {settings.stream_metrics_port}: {error}")
    console.print(f"Metrics on :{settings.stream_metrics_port}/metrics")
    return metrics


def _measure_lag(metrics: StreamMetrics, engine: Engine, source: KafkaSource) -> None:
    # The lag is an observation: an unanswered broker or database leaves the last value.
    try:
        metrics.measure_lag(engine, source.bootstrap_servers, source.topic, source.security)
    except (
        kafka.KafkaUnreachableError,
        kafka.KafkaAuthenticationError,
        SQLAlchemyError,
    ) as error:
        console.print(f"[dim]lag not measured: {error}[/]")


def _bootstrap_servers(settings: Settings) -> str:
    if not settings.kafka_bootstrap_servers:
        fail(
            "no Kafka broker configured: set SFMLOPS_KAFKA_BOOTSTRAP_SERVERS (e.g. 127.0.0.1:9092)"
        )
    return settings.kafka_bootstrap_servers


def _latest_date(ctx: typer.Context, sales: pd.DataFrame, from_db: bool) -> dt.date:
    if from_db:
        with engine_of(ctx).connect() as connection:
            latest = sales_records.latest_sales_date(connection)
        if latest is not None:
            return latest
    return sales[columns.SALES_DATE].max().date()  # type: ignore[no-any-return]
