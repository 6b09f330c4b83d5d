"""Benchmark: PostgreSQL's part of a stream micro-batch (staging, COPY, merge, commit).

The stream job writes each micro-batch with `sales_records.upsert_sales` in one transaction. This
times that write piece by piece on a durable server (fsync and synchronous_commit on), for
several ways of writing and two sets of server settings, on the same data:

- the table starts with two date-shifted copies of the bundled sales (~1.9 M rows), cloned
  from a template database for every variant, so each starts from the same state;
- four passes over `--batches` micro-batches of `--batch-rows` rows of a third copy, in event
  order (day, then store): new rows; the same batches re-delivered unchanged (the replay path
  after a crash or a lost checkpoint); the same batches with corrected values; batches of a
  fourth copy's new rows with 1 % corrections of stored rows among them.

Per batch: copy (dedupe and sort in pandas, staging table, encoding, COPY), merge (every
statement after COPY), commit, total, the CPU time of the server backend over the transaction
(from /proc: the figure least disturbed by other work on a shared machine), and WAL bytes
(difference of the WAL insert position).
Printed: the median of each per variant and pass, and checkpoints during each variant.

    PYTHONPATH=src .venv/bin/python benchmarks/postgres_upsert.py [--variants on-conflict,repository]

`--explain` prints EXPLAIN (ANALYZE, BUFFERS, WAL) of the first batch of each pass instead of
timing (the SQL variants only). Starts throwaway PostgreSQL servers with scripts/postgres.sh.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import make_url

from sfmlops.adapters.db import sales_records, store_records
from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.core import columns
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services import loading, producing

ROOT = Path(__file__).resolve().parents[1]
PASSES = ("new", "replay", "corrected", "mixed")
PHASES = ("copy", "merge", "commit", "total", "server_cpu", "wal_mb")

# PostgreSQL 15's defaults for the settings scripts/postgres.sh (and the chart) change.
STOCK = {
    "shared_buffers": "128MB",
    "wal_buffers": "-1",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "5min",
    "wal_compression": "off",
    "temp_buffers": "8MB",
}
# "tuned": what scripts/postgres.sh sets (the chart's postgresql.config, 1GB shared_buffers).
SETTINGS: dict[str, dict[str, str]] = {"stock": STOCK, "tuned": {}}

KEY = list(columns.SALES_KEY)
VALUES = [name for name in columns.SALES_COLUMNS if name not in columns.SALES_KEY]
COLUMNS = ", ".join(columns.SALES_COLUMNS)


def _row(alias: str, names: Sequence[str]) -> str:
    return "(" + ", ".join(f"{alias}.{name}" for name in names) + ")"


ON_KEY = " AND ".join(f"t.{name} = s.{name}" for name in KEY)
SET_VALUES = ", ".join(f"{name} = s.{name}" for name in VALUES) + ", ingested_at = now()"
ON_CONFLICT = (
    f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in VALUES)
    + f", ingested_at = now() WHERE {_row('t', VALUES)} IS DISTINCT FROM {_row('excluded', VALUES)}"
)
# {staging} is the staging table's name.
MERGES: dict[str, list[str]] = {
    "on-conflict": [
        f"INSERT INTO sales AS t ({COLUMNS}) SELECT {COLUMNS} FROM {{staging}} {ON_CONFLICT}"
    ],
    # Rows equal to the stored ones are dropped before the insert: the ON CONFLICT path locks
    # (and so writes) every conflicting row, even when its WHERE then skips the update.
    "changed-on-conflict": [
        f"INSERT INTO sales AS t ({COLUMNS}) SELECT {_row('s', columns.SALES_COLUMNS)[1:-1]} "
        f"FROM {{staging}} s LEFT JOIN sales o ON {ON_KEY.replace('t.', 'o.')} "
        f"WHERE o.{KEY[0]} IS NULL OR {_row('o', VALUES)} IS DISTINCT FROM {_row('s', VALUES)} "
        f"{ON_CONFLICT}"
    ],
    "merge": [
        f"MERGE INTO sales t USING {{staging}} s ON {ON_KEY} "
        f"WHEN MATCHED AND {_row('t', VALUES)} IS DISTINCT FROM {_row('s', VALUES)} "
        f"THEN UPDATE SET {SET_VALUES} "
        f"WHEN NOT MATCHED THEN INSERT ({COLUMNS}) VALUES {_row('s', columns.SALES_COLUMNS)}"
    ],
    "split": [
        f"UPDATE sales t SET {SET_VALUES} FROM {{staging}} s WHERE {ON_KEY} "
        f"AND {_row('t', VALUES)} IS DISTINCT FROM {_row('s', VALUES)}",
        f"INSERT INTO sales ({COLUMNS}) SELECT {_row('s', columns.SALES_COLUMNS)[1:-1]} "
        f"FROM {{staging}} s WHERE NOT EXISTS (SELECT 1 FROM sales t WHERE {ON_KEY})",
    ],
}


@dataclass(frozen=True)
class Variant:
    """One way of writing a batch, on one set of server settings.

    `merge` None means `sales_records.upsert_sales` as this checkout has it; otherwise the
    statements of MERGES[merge] after COPY into a staging table made as the fields say.
    """

    name: str
    settings: str
    merge: str | None = None
    copy_format: str = "csv"
    staging: str = "temp"  # temp: CREATE TEMP ... ON COMMIT DROP; unlogged: one kept table
    analyze: bool = False
    ingested_at_index: str = "btree"  # btree (the migration's), brin, or none


VARIANTS = [
    # What sales_records.upsert_sales did before this benchmark: the baseline.
    Variant("on-conflict-stock", "stock", merge="on-conflict"),
    Variant("on-conflict", "tuned", merge="on-conflict"),
    Variant("repository-stock", "stock"),
    Variant("repository", "tuned"),
    Variant("changed-on-conflict-analyze", "tuned", merge="changed-on-conflict", analyze=True),
    Variant("merge", "tuned", merge="merge"),
    Variant("merge-analyze", "tuned", merge="merge", analyze=True),
    Variant("split-analyze", "tuned", merge="split", analyze=True),
    Variant("on-conflict-text", "tuned", merge="on-conflict", copy_format="text"),
    Variant("on-conflict-unlogged", "tuned", merge="on-conflict", staging="unlogged"),
    Variant("on-conflict-no-ingested-at-index", "tuned", "on-conflict", ingested_at_index="none"),
    Variant("repository-no-ingested-at-index", "tuned", ingested_at_index="none"),
    Variant("repository-brin-ingested-at-index", "tuned", ingested_at_index="brin"),
]


@dataclass
class Timings:
    """Per pass, per phase: one figure per batch."""

    figures: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {p: {phase: [] for phase in PHASES} for p in PASSES}
    )

    def add(self, pass_name: str, **phases: float) -> None:
        for phase, value in phases.items():
            self.figures[pass_name][phase].append(value)

    def medians(self, pass_name: str) -> dict[str, float]:
        return {
            phase: statistics.median(values) if values else float("nan")
            for phase, values in self.figures[pass_name].items()
        }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(work: Path, settings: dict[str, str]) -> Iterator[str]:
    """A throwaway PostgreSQL server with fsync on and `settings`; yields its URL."""
    work.chmod(0o755)  # the cluster runs as "postgres" when this runs as root
    cluster = work / "pg"
    options = " ".join(f"-c {name}={value}" for name, value in settings.items())
    script = str(ROOT / "scripts" / "postgres.sh")
    url = subprocess.run(
        [script, "start", str(cluster), str(free_port())],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ | {"SFMLOPS_PG_FSYNC": "on", "SFMLOPS_PG_OPTIONS": options},
    ).stdout.strip()
    try:
        yield url
    finally:
        subprocess.run([script, "stop", str(cluster)], check=False)


def shifted(sales: pd.DataFrame, years: int) -> pd.DataFrame:
    """The sales dated `years` later: the same records under distinct keys."""
    return sales.assign(
        **{columns.SALES_DATE: sales[columns.SALES_DATE] + pd.DateOffset(years=years)}
    )


def mixed(sales: pd.DataFrame, stored: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Batches of new keys where 1 % of the rows are corrections of the `stored` batches'."""
    later = producing.in_event_order(sales).reset_index(drop=True)
    batches = []
    for number, batch in enumerate(stored):
        fresh = later.iloc[number * len(batch) : (number + 1) * len(batch)]
        corrections = batch.sample(frac=0.01, random_state=number)
        corrections = corrections.assign(**{columns.SALES: corrections[columns.SALES] + 2.0})
        batches.append(pd.concat([fresh.iloc[len(corrections) :], corrections]))
    return batches


def database_url(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def make_template(url: str, stores: pd.DataFrame, history: pd.DataFrame) -> None:
    """Database `template_sales`: migrated, stores and `history` loaded, vacuumed."""
    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql("CREATE DATABASE template_sales")
    engine = make_engine(database_url(url, "template_sales"))
    migrate(engine)
    with engine.begin() as connection:
        store_records.upsert_stores(connection, stores)
        sales_records.upsert_sales(connection, history)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        # As a table some time after a bulk load is: hint bits set, visibility map, statistics.
        connection.exec_driver_sql("VACUUM (ANALYZE) sales")
    engine.dispose()
    admin.dispose()


@contextmanager
def variant_database(url: str, variant: Variant) -> Iterator[Engine]:
    """A copy of the template for one variant, checkpointed; dropped afterwards."""
    name = variant.name.replace("-", "_")
    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(
            f"CREATE DATABASE {name} TEMPLATE template_sales STRATEGY file_copy"
        )
    engine = make_engine(database_url(url, name))
    with engine.begin() as connection:
        if variant.ingested_at_index != "btree":
            connection.exec_driver_sql("DROP INDEX ix_sales_ingested_at")
        if variant.ingested_at_index == "brin":
            connection.exec_driver_sql(
                "CREATE INDEX ix_sales_ingested_at ON sales USING brin (ingested_at)"
            )
        if variant.staging == "unlogged":
            connection.exec_driver_sql(
                "CREATE UNLOGGED TABLE sales_staging_unlogged (LIKE sales INCLUDING DEFAULTS)"
            )
    with admin.connect() as connection:
        connection.exec_driver_sql("CHECKPOINT")
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE {name}")
        admin.dispose()


def text_buffer(frame: pd.DataFrame) -> io.BytesIO:
    """The frame in COPY's text format (tab-separated, empty = NULL), via Arrow."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    position = table.schema.get_field_index(columns.SALES_DATE)
    table = table.set_column(position, columns.SALES_DATE, table.column(position).cast(pa.date32()))
    buffer = io.BytesIO()
    pa_csv.write_csv(
        table,
        buffer,
        pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"),
    )
    buffer.seek(0)
    return buffer


def staged_write(
    connection: Connection, frame: pd.DataFrame, variant: Variant, explain: bool
) -> float:
    """Write a batch as `variant` says (COPY into staging, then its merge statements).

    Returns the seconds from the start to the end of COPY (the rest is the merge).
    """
    frame = frame.drop_duplicates(KEY, keep="last").sort_values(KEY)
    if variant.staging == "temp":
        staging = "sales_staging"
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {staging} (LIKE sales INCLUDING DEFAULTS) ON COMMIT DROP"
        )
    else:
        staging = "sales_staging_unlogged"
        connection.exec_driver_sql(f"TRUNCATE {staging}")
    if variant.copy_format == "csv":
        buffer = sales_records._csv_buffer(frame[list(columns.SALES_COLUMNS)])
        options = "FORMAT csv"
    else:
        buffer = text_buffer(frame[list(columns.SALES_COLUMNS)])
        options = "FORMAT text, NULL ''"
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(f"COPY {staging} ({COLUMNS}) FROM STDIN WITH ({options})", buffer)
    finally:
        cursor.close()
    copied = time.perf_counter()
    if variant.analyze:
        connection.exec_driver_sql(f"ANALYZE {staging}")
    assert variant.merge is not None
    for statement in MERGES[variant.merge]:
        sql = statement.format(staging=staging)
        if explain:
            plan = connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF) {sql}"
            ).scalars()
            print("\n".join(plan), flush=True)
        else:
            connection.exec_driver_sql(sql)
    return copied


class MergeClock:
    """Notes when `sales_records.upsert_sales` issues its first statement after COPY.

    Staging and savepoint statements belong to the copy phase; the merge starts with the
    first other statement (none when the frame went straight into sales).
    """

    def __init__(self, engine: Engine) -> None:
        self.merge_started: float | None = None
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, *args: Any) -> None:
        statement = str(args[2]).lstrip().upper()
        if self.merge_started is None and not statement.startswith(
            ("CREATE", "TRUNCATE", "SAVEPOINT", "RELEASE", "ROLLBACK")
        ):
            self.merge_started = time.perf_counter()


def wal_position(connection: Connection) -> int:
    return int(
        connection.exec_driver_sql(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')"
        ).scalar_one()
    )


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a local process has used: the server backend's work, which
    other processes on the machine slow down far less than its wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def checkpoints(url: str) -> int:
    """Checkpoints the server has made since it started."""
    engine = make_engine(url)
    with engine.connect() as connection:
        count = connection.exec_driver_sql(
            "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
        ).scalar_one()
    engine.dispose()
    return int(count)


def write_batch(
    connection: Connection, clock: MergeClock, variant: Variant, batch: pd.DataFrame, explain: bool
) -> dict[str, float]:
    """Write one batch in its own transaction; returns the seconds of each phase and WAL MB."""
    wal_before = wal_position(connection)
    backend = int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    connection.commit()  # the probes' implicit transaction
    cpu_before = cpu_seconds(backend)
    clock.merge_started = None
    started = time.perf_counter()
    with connection.begin() as transaction:
        if variant.merge is None:
            sales_records.upsert_sales(connection, batch)
            merged = time.perf_counter()
            copied = clock.merge_started or merged
        else:
            copied = staged_write(connection, batch, variant, explain)
            merged = time.perf_counter()
        transaction.commit()
    committed = time.perf_counter()
    cpu_after = cpu_seconds(backend)
    wal_after = wal_position(connection)
    connection.commit()
    return {
        "copy": copied - started,
        "merge": merged - copied,
        "commit": committed - merged,
        "total": committed - started,
        "server_cpu": cpu_after - cpu_before,
        "wal_mb": (wal_after - wal_before) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", help="comma-separated names (default: all)")
    parser.add_argument("--batches", type=int, default=4, help="batches per pass")
    parser.add_argument("--batch-rows", type=int, default=200_000)
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    chosen = args.variants.split(",") if args.variants else [v.name for v in VARIANTS]
    unknown = set(chosen) - {v.name for v in VARIANTS}
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {[v.name for v in VARIANTS]}")
    variants = [v for v in VARIANTS if v.name in chosen]

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"started {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; load {os.getloadavg()}")
    print(f"args {vars(args)}")
    dataset = loading.read_dataset(ROSSMANN_DIR)
    history = pd.concat([dataset.sales, shifted(dataset.sales, 3)], ignore_index=True)
    fresh = producing.in_event_order(shifted(dataset.sales, 6)).reset_index(drop=True)
    rows = args.batch_rows
    if args.batches * rows > len(fresh):
        parser.error(f"a copy of the sales holds {len(fresh):,} rows: fewer batches or rows")
    new = [fresh.iloc[i * rows : (i + 1) * rows] for i in range(args.batches)]
    passes = {
        "new": new,
        "replay": new,
        "corrected": [batch.assign(**{columns.SALES: batch[columns.SALES] + 1.0}) for batch in new],
        "mixed": mixed(shifted(dataset.sales, 9), new),
    }
    print(f"table starts with {len(history):,} rows; {args.batches} batches of {rows:,} per pass")

    with ExitStack() as stack:
        urls = {}
        for settings_name in dict.fromkeys(v.settings for v in variants):
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sfmlops-pg-")))
            urls[settings_name] = stack.enter_context(server(work, SETTINGS[settings_name]))
            print(f"server settings {settings_name}: {server_settings(urls[settings_name])}")
            make_template(urls[settings_name], dataset.stores, history)
        engines = {v: stack.enter_context(variant_database(urls[v.settings], v)) for v in variants}
        clocks = {v: MergeClock(engines[v]) for v in variants}
        connections = {v: stack.enter_context(engines[v].connect()) for v in variants}
        before = {name: checkpoints(url) for name, url in urls.items()}
        timings = {v: Timings() for v in variants}
        # Variants take turns batch by batch (each starting first in turn), so load from other
        # processes on this shared machine falls on all of them alike.
        for pass_name, batches in passes.items():
            for number, batch in enumerate(batches):
                turn = variants[number % len(variants) :] + variants[: number % len(variants)]
                for variant in turn:
                    if args.explain and (variant.merge is None or number > 0):
                        continue
                    figures = write_batch(
                        connections[variant], clocks[variant], variant, batch, args.explain
                    )
                    timings[variant].add(pass_name, **figures)
            print(f"pass {pass_name} done, load {os.getloadavg()}", flush=True)
        done = {name: checkpoints(url) - before[name] for name, url in urls.items()}
    print(
        f"finished {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; checkpoints during the passes: {done}"
    )
    if not args.explain:
        print_table(
            [(v, p, timings[v].medians(p), done[v.settings]) for v in variants for p in PASSES]
        )


def server_settings(url: str) -> str:
    """The settings this benchmark varies, and durability, as the server reports them."""
    engine = make_engine(url)
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%(names)s) "
            "ORDER BY name",
            {"names": [*STOCK, "fsync", "synchronous_commit"]},
        ).all()
    engine.dispose()
    return ", ".join(f"{name}={setting}" for name, setting in rows)


def print_table(results: list[tuple[Variant, str, dict[str, float], int]]) -> None:
    print(
        "\n| variant | settings | pass | copy s | merge s | commit s | total s | server CPU s |"
        " WAL MB | checkpoints |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for variant, pass_name, m, done in results:
        print(
            f"| {variant.name} | {variant.settings} | {pass_name} | {m['copy']:.3f} | "
            f"{m['merge']:.3f} | {m['commit']:.3f} | {m['total']:.3f} | {m['server_cpu']:.2f} | {m['wal_mb']:.0f} | {done} |"
        )


if __name__ == "__main__":
    main()
