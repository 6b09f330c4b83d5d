"""`sfmlops demo --with-kafka`: the last days of the bundled data through Kafka and Spark.

Starts what is not configured: a Kafka broker (scripts/kafka.sh) unless
SFMLOPS_KAFKA_BOOTSTRAP_SERVERS is set, and a throwaway PostgreSQL (scripts/postgres.sh) unless
SFMLOPS_DATABASE_URL is PostgreSQL; stops what it started. Needs a source checkout (for the
scripts), Java and Maven.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pandas as pd
from rich.table import Table
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

import sfmlops
from sfmlops.adapters.db import store_records
from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.adapters.db.tables import ingest_dead_letters, sales
from sfmlops.cli.context import console, fail
from sfmlops.core import columns
from sfmlops.services import loading, producing
from sfmlops.settings import Settings

DEMO_DAYS = 7
SOURCE_ROOT = Path(sfmlops.__file__).resolve().parents[2]


def stream_last_days(settings: Settings, data_folder: Path, days: int = DEMO_DAYS) -> None:
    """Send the last `days` days of `data_folder`'s sales through Kafka and Spark into PostgreSQL.

    Prints each micro-batch and, at the end, the rows that landed per day.
    """
    from sfmlops.adapters import spark  # noqa: PLC0415 - the "spark" extra, only here
    from sfmlops.services import stream_ingestion  # noqa: PLC0415

    scripts = SOURCE_ROOT / "scripts"
    if not (scripts / "kafka.sh").is_file():
        fail(f"--with-kafka runs from a source checkout: {scripts / 'kafka.sh'} not found")
    console.rule("Streaming through Kafka and Spark")
    dataset = loading.read_dataset(data_folder)
    last = dataset.sales[columns.SALES_DATE].max()
    recent = dataset.sales[dataset.sales[columns.SALES_DATE] > last - pd.Timedelta(days=days)]
    with ExitStack() as stack:
        database_url = settings.database_url
        if database_url is None or make_url(database_url).get_backend_name() != "postgresql":
            database_url = stack.enter_context(_throwaway_postgres(settings.home, scripts))
        bootstrap = settings.kafka_bootstrap_servers or stack.enter_context(
            _demo_broker(settings.home, scripts)
        )
        _run(
            [str(scripts / "fetch-jars.sh"), "spark-connectors"],
            {"SFMLOPS_JARS_DIR": str(settings.jars_dir)},
        )
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        migrate(engine)
        started = dt.datetime.now(dt.UTC)
        with engine.begin() as connection:
            store_records.upsert_stores(connection, dataset.stores)
        sent = producing.produce_sales(
            bootstrap,
            settings.kafka_topic,
            settings.kafka_topic_partitions,
            producing.in_event_order(recent),
            security=settings.kafka_security,
        )
        console.print(
            f"Sent {sent:,} events ({days} days) to {settings.kafka_topic} on {bootstrap}"
        )
        stream_ingestion.run_stream(
            engine,
            spark.KafkaSource(
                bootstrap,
                settings.kafka_topic,
                settings.stream_max_batch_events,
                security=settings.kafka_security,
            ),
            settings.checkpoints_dir / settings.kafka_topic,
            spark.connector_jars(settings.jars_dir),
            interval=None,
            on_batch=lambda batch: console.print(batch.describe(), highlight=False, soft_wrap=True),
        )
        _print_landed(engine, recent, started)


def _print_landed(engine: Engine, recent: pd.DataFrame, since: dt.datetime) -> None:
    first_day = recent[columns.SALES_DATE].min().date()
    with engine.connect() as connection:
        rows = connection.execute(
            select(sales.c.sales_date, func.count(), func.sum(sales.c.sales))
            .where(sales.c.sales_date >= first_day)
            .group_by(sales.c.sales_date)
            .order_by(sales.c.sales_date)
        ).all()
        letters = connection.execute(
            select(func.count())
            .select_from(ingest_dead_letters)
            .where(ingest_dead_letters.c.received_at >= since)
        ).scalar_one()
    table = Table("sales date", "stores", "total sales", title="Landed in PostgreSQL via Kafka")
    for day, count, total in rows:
        table.add_row(str(day), f"{count:,}", f"{total:,.0f}")
    console.print(table)
    console.print(f"Dead letters from this run: {letters:,}")


@contextmanager
def _throwaway_postgres(home: Path, scripts: Path) -> Iterator[str]:
    folder = home / "demo-postgres"
    home.mkdir(parents=True, exist_ok=True)
    _run([str(scripts / "postgres.sh"), "stop", str(folder)], {})  # a previous run's leftovers
    url = _run([str(scripts / "postgres.sh"), "start", str(folder), str(_free_port())], {})
    console.print(f"Started a throwaway PostgreSQL: {url}")
    try:
        yield url
    finally:
        _run([str(scripts / "postgres.sh"), "stop", str(folder)], {})


@contextmanager
def _demo_broker(home: Path, scripts: Path) -> Iterator[str]:
    env = {"SFMLOPS_HOME": str(home)}
    port = _free_port()
    _run([str(scripts / "kafka.sh"), "start", str(port), str(_free_port())], env)
    console.print(f"Started a Kafka broker on 127.0.0.1:{port} (data in {home / 'kafka'})")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _run([str(scripts / "kafka.sh"), "stop"], env)


def _run(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        command, env=os.environ | env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        fail(f"{Path(command[0]).name} {command[1]} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
