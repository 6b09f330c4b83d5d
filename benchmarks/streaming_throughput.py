"""Benchmark: Kafka → Spark Structured Streaming → PostgreSQL, end to end, on one machine.

1. Sustained throughput and freshness: a producer process sends the bundled sales (in
   `--copies` date-shifted copies, so every event is a distinct record) at `--rate` events/s
   while `sfmlops`'s stream job runs continuously (`--interval`). Throughput is events divided
   by the time from the first event produced to the last one queryable (committed) in
   PostgreSQL; freshness is, per event, its commit time minus its Kafka timestamp.
2. Replays, ours beside the reference's design (one plain append per micro-batch, no dedupe)
   on the same data (the bundled sales as events): a crash after a batch's database commit and
   before its checkpoint (Spark re-delivers the batch; ours resumes from the offsets stored
   with the data), then a lost checkpoint (Spark replays the topic from the earliest offset;
   ours resumes, and is then made to replay everything with `from_earliest`). Reported:
   duplicate rows each design holds after each.

    PYTHONPATH=src .venv/bin/python benchmarks/streaming_throughput.py [--copies 3 --rate 50000]
        [--data DIR --days 7]

`--data DIR` sends the last `--days` days of a `sfmlops synth` folder's sales instead of the
bundled sales (every series that sold on those days: 100,350 distinct keys for `sfmlops synth
--stores 1115 --products 90`); its stores must be the bundled ones, as synth makes them.

Starts a throwaway PostgreSQL (fsync on) with scripts/postgres.sh and a Kafka broker with
scripts/kafka.sh; needs Spark's connector jars (scripts/fetch-jars.sh spark-connectors).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import multiprocessing
import os
import platform
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
from pyspark.sql import SparkSession
from sqlalchemy import Engine, text

from sfmlops.adapters import files, kafka
from sfmlops.adapters import spark as spark_adapter
from sfmlops.adapters.db import sales_records, store_records
from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.core import columns, events
from sfmlops.core.validation import EARLIEST_SALES_DATE, validate_sales
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services import loading, producing, stream_ingestion
from sfmlops.services.stream_ingestion import BatchReport
from sfmlops.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 4
REFERENCE_TABLE = "sales_reference_append"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def services(work: Path) -> Iterator[tuple[str, str, dict[str, int]]]:
    """A PostgreSQL server (fsync on) and a Kafka broker; yields their URL, address and pids."""
    work.chmod(0o755)  # the cluster runs as "postgres" when this runs as root
    cluster = work / "pg"
    url = subprocess.run(
        [str(ROOT / "scripts" / "postgres.sh"), "start", str(cluster), str(free_port())],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ | {"SFMLOPS_PG_FSYNC": "on"},
    ).stdout.strip()
    kafka_env = os.environ | {"SFMLOPS_HOME": str(work / "kafka-home"), "SFMLOPS_KAFKA_HEAP": "1g"}
    port = free_port()
    kafka_script = str(ROOT / "scripts" / "kafka.sh")
    try:
        subprocess.run(
            [kafka_script, "start", str(port), str(free_port())], check=True, env=kafka_env
        )
        pids = {
            "PostgreSQL": int((cluster / "data" / "postmaster.pid").read_text().split()[0]),
            "Kafka broker": int((work / "kafka-home" / "kafka" / "broker.pid").read_text()),
        }
        yield url, f"127.0.0.1:{port}", pids
    finally:
        subprocess.run([kafka_script, "stop"], check=False, env=kafka_env)
        subprocess.run([str(ROOT / "scripts" / "postgres.sh"), "stop", str(cluster)], check=False)


def recent_sales(folder: Path, days: int, store_ids: Collection[int]) -> pd.DataFrame:
    """The last `days` days of a data folder's sales file, validated, read in chunks of 1 M
    rows (a 100k-series file does not fit in memory as one frame of text)."""
    path = files.find_file(folder, *loading.SALES_FILE_NAMES)
    if path is None:
        raise SystemExit(f"--data {folder}: no sales file ({', '.join(loading.SALES_FILE_NAMES)})")
    kept: list[pd.DataFrame] = []
    last = dt.date.min
    for raw in files.read_csv_chunks_as_text(path, 1_000_000, columns.ROSSMANN_SALES_COLUMNS):
        last = max(last, dt.date.fromisoformat(raw[columns.SALES_DATE].max()))
        # ISO dates compare as text; rows before a later chunk's window are dropped below.
        kept.append(
            raw[raw[columns.SALES_DATE] >= (last - dt.timedelta(days=days - 1)).isoformat()]
        )
    recent = pd.concat(kept, ignore_index=True)
    recent = recent[recent[columns.SALES_DATE] >= (last - dt.timedelta(days=days - 1)).isoformat()]
    validated = validate_sales(recent.reset_index(drop=True), store_ids)
    if not validated.ok:
        raise SystemExit(f"--data {folder}: invalid rows:\n{validated.issues.head()}")
    return validated.valid


def shifted_copies(sales: pd.DataFrame, copies: int) -> pd.DataFrame:
    """`copies` copies of the sales, each dated 3 years before the previous: distinct keys.

    Earlier, not later: the stream job dead-letters sales dated after tomorrow, and copies
    dated 9 years or more after the bundled data's 2015 are in the future.
    """
    earliest = sales[columns.SALES_DATE].min() - pd.DateOffset(years=3 * (copies - 1))
    if earliest.date() < EARLIEST_SALES_DATE:
        raise SystemExit(f"{copies} copies go back to {earliest.date()}, before 1990: fewer")
    parts = [
        sales.assign(**{columns.SALES_DATE: sales[columns.SALES_DATE] - pd.DateOffset(years=3 * k)})
        for k in range(copies)
    ]
    return producing.in_event_order(pd.concat(parts, ignore_index=True))


def produce_when_told(
    go: EventType,
    bootstrap: str,
    topic: str,
    sales_file: Path,
    rate: float | None,
    cpu_seconds: Any,
) -> None:
    """The producer process: reads the events' rows, waits for the go, sends at `rate`, and
    reports the CPU time sending took (its own and librdkafka's threads)."""
    sales = pd.read_parquet(sales_file)
    go.wait()
    started = _own_cpu_seconds()
    producing.produce_sales(bootstrap, topic, PARTITIONS, sales, rate=rate)
    cpu_seconds.value = _own_cpu_seconds() - started


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds of each process of the pipeline, read from the OS (psutil).

    A server counts with its children (PostgreSQL's backends); this process counts alone, as
    its children are Spark's JVM and the producer, counted on their own.
    """

    def __init__(self, servers: dict[str, int]) -> None:
        self.servers = servers

    def sample(self) -> dict[str, float]:
        seconds = {"stream job (Python)": _cpu_seconds([psutil.Process()])}
        for name, pid in self.servers.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                root = psutil.Process(pid)
                seconds[name] = _cpu_seconds([root, *root.children(recursive=True)])
        return seconds


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


class Collector:
    """Collects batch reports; tells when `expected` records have been received."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.reports: list[BatchReport] = []
        self.done = threading.Event()

    def __call__(self, report: BatchReport) -> None:
        if not report.received:
            return  # a trigger that found nothing new
        # The rest of a batch's cycle (commit to commit) is Spark: reading, parsing, handing over.
        cycle = (
            f", {(report.committed_at - self.reports[-1].committed_at).total_seconds():.2f} s "
            "after the previous commit"
            if self.reports
            else ""
        )
        self.reports.append(report)
        print(
            f"  {report.describe()} (prepared in {report.prepare_seconds:.2f} s, "
            f"written in {report.write_seconds:.2f} s{cycle})",
            flush=True,
        )
        if sum(r.received for r in self.reports) >= self.expected:
            self.done.set()


def run_query(
    session: SparkSession,
    source: spark_adapter.KafkaSource,
    checkpoint: Path,
    write: Callable[[pd.DataFrame, int], None],
    interval: str | None,
) -> None:
    """Run one query until it drains the topic (interval None) or fails."""
    spark_adapter.start_sales_stream(session, source, write, checkpoint, interval=interval).wait()


def sustained(
    session: SparkSession,
    engine: Engine,
    bootstrap: str,
    phases: dict[str, pd.DataFrame],
    args: argparse.Namespace,
    work: Path,
    meter: CpuMeter,
) -> dict[str, dict[str, float]]:
    """One continuous stream job; per phase, a producer process sends that phase's events and
    the phase ends when all of them are committed. The first phase meets a cold JVM (Spark's
    JIT compiles its hot paths during the first minute); later ones a warmed-up job, as a
    stream job that runs for days mostly is."""
    topic = "bench.sustained"
    kafka.ensure_topic(bootstrap, topic, PARTITIONS)
    source = spark_adapter.KafkaSource(bootstrap, topic, args.batch)
    current: list[Collector] = []

    def to_current_phase(report: BatchReport) -> None:
        current[-1](report)

    # The stream job's own pipeline: batch N is written while Spark reads batch N+1.
    stream = stream_ingestion.start_stream(
        session,
        engine,
        source,
        work / "ckpt-sustained",
        interval=args.interval,
        on_batch=to_current_phase,
    )
    results: dict[str, dict[str, float]] = {}
    try:
        for name, sales in phases.items():
            print(f"\n{name}: {len(sales):,} events", flush=True)
            collector = Collector(len(sales))
            current.append(collector)
            started = dt.datetime.now(dt.UTC)
            before = meter.sample()
            producer_cpu = produce_and_wait(bootstrap, topic, sales, collector, args, work)
            used = {k: v - before[k] for k, v in meter.sample().items() if k in before}
            print_spark_phases(stream.running.query.recentProgress, collector, started)
            results[name] = figures(collector)
            print_cpu(used | {"producer (Python, librdkafka)": producer_cpu}, len(sales))
    finally:
        stream.request_stop()
        stream.wait()
    with engine.connect() as connection:
        stored = sales_records.sales_summary(connection).rows
    expected = sum(len(sales) for sales in phases.values())
    if stored != expected:
        raise RuntimeError(f"{stored:,} rows stored for {expected:,} distinct events")
    return results


def produce_and_wait(
    bootstrap: str,
    topic: str,
    sales: pd.DataFrame,
    collector: Collector,
    args: argparse.Namespace,
    work: Path,
) -> float:
    """Send `sales` from a producer process; wait until all are committed. Returns the
    producer's CPU seconds."""
    sales_file = work / "phase.parquet"
    sales.to_parquet(sales_file)
    # A separate process, as a real producer: it must not share this one's GIL.
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    cpu_seconds = context.Value("d", 0.0)
    producer = context.Process(
        target=produce_when_told,
        args=(go, bootstrap, topic, sales_file, args.rate or None, cpu_seconds),
    )
    producer.start()
    go.set()
    finished = collector.done.wait(timeout=args.timeout)
    producer.join(timeout=60)
    if not finished:
        raise RuntimeError(f"only {sum(r.received for r in collector.reports):,} events arrived")
    return float(cpu_seconds.value)


def print_cpu(seconds: dict[str, float], events: int) -> None:
    """CPU time per process over the phase, and per event."""
    print("CPU time over the phase:")
    for name, used in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"  {name:>30}: {used:6.1f} s, {used / events * 1e6:5.1f} µs/event")
    total = sum(seconds.values())
    print(f"  {'total':>30}: {total:6.1f} s, {total / events * 1e6:5.1f} µs/event")


def figures(collector: Collector) -> dict[str, float]:
    freshness = np.concatenate([r.freshness_seconds for r in collector.reports])
    first_produced = min(
        r.committed_at.timestamp() - float(r.freshness_seconds.max()) for r in collector.reports
    )
    last_committed = max(r.committed_at.timestamp() for r in collector.reports)
    return {
        "events": float(collector.expected),
        "seconds": last_committed - first_produced,
        "events_per_second": collector.expected / (last_committed - first_produced),
        "freshness_p50": float(np.percentile(freshness, 50)),
        "freshness_p95": float(np.percentile(freshness, 95)),
        "freshness_max": float(freshness.max()),
        "batches": float(len(collector.reports)),
    }


def print_spark_phases(progress: list[Any], collector: Collector, since: dt.datetime) -> None:
    """Where a batch's time went, medians over the batches with records, from Spark's progress.

    addBatch is our foreachBatch: Spark reading Kafka and handing Arrow over, our decoding
    and validation, and waiting for the previous batch's write.
    """
    phases: dict[str, list[float]] = {}
    for entry in progress:
        if entry.numInputRows and dt.datetime.fromisoformat(entry.timestamp) >= since:
            for phase, millis in entry.durationMs.items():
                phases.setdefault(phase, []).append(millis / 1000)
    medians = {phase: float(np.median(values)) for phase, values in phases.items()}
    if collector.reports:
        medians["of addBatch: our decoding"] = float(
            np.median([r.prepare_seconds for r in collector.reports])
        )
        medians["our write (behind Spark)"] = float(
            np.median([r.write_seconds for r in collector.reports])
        )
    print("Spark phases per batch (median seconds):")
    for phase, seconds in sorted(medians.items()):
        print(f"  {phase:>26}: {seconds:.2f}")


class SimulatedCrashError(RuntimeError):
    """Raised after a batch's database commit, before Spark can record it."""


def append_reference(engine: Engine, received: pd.DataFrame) -> int:
    """The reference's sink: parse, keep valid rows, append them; no key, no dedupe."""
    decoded = events.decode_sales_events(received)
    with engine.begin() as connection:
        valid = validate_sales(
            decoded.records, store_records.store_ids(connection), reject_duplicates=False
        ).valid
        buffer = io.StringIO()
        valid.to_csv(buffer, index=False, header=False, date_format="%Y-%m-%d")
        buffer.seek(0)
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.copy_expert(
            f"COPY {REFERENCE_TABLE} ({', '.join(columns.SALES_COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
            buffer,
        )
        cursor.close()
    return len(valid)


def replays(
    session: SparkSession,
    engine: Engine,
    bootstrap: str,
    sales: pd.DataFrame,
    args: argparse.Namespace,
    work: Path,
) -> dict[str, dict[str, int]]:
    topic = "bench.replay"
    producing.produce_sales(bootstrap, topic, PARTITIONS, sales)
    source = spark_adapter.KafkaSource(bootstrap, topic, args.batch)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE sales"))
        connection.execute(
            text(f"CREATE TABLE {REFERENCE_TABLE} AS SELECT * FROM sales WITH NO DATA")
        )
    return {
        "sfmlops (offsets stored with the data, upsert on key)": ours(
            session, engine, source, work / "ckpt-ours"
        ),
        "reference (append per micro-batch, Spark checkpoint)": reference(
            session, engine, source, work / "ckpt-reference"
        ),
    }


def ours(
    session: SparkSession, engine: Engine, source: spark_adapter.KafkaSource, checkpoint: Path
) -> dict[str, int]:
    """The stream job's pipeline through a crash after batch 1's commit, a lost checkpoint and
    a deliberate replay of the whole topic."""

    def run(on_batch: Callable[[BatchReport], None], from_earliest: bool = False) -> None:
        stream_ingestion.start_stream(
            session,
            engine,
            source,
            checkpoint,
            interval=None,
            on_batch=on_batch,
            from_earliest=from_earliest,
        ).wait()

    def crash_after_batch_one(report: BatchReport) -> None:
        if report.batch_id == 1:
            raise SimulatedCrashError("after the commit of batch 1")

    with contextlib.suppress(spark_adapter.StreamFailedError):
        run(crash_after_batch_one)
    run(lambda _report: None)
    after_crash = duplicates(engine, "sales")
    shutil.rmtree(checkpoint)
    run(lambda _report: None)
    after_lost_checkpoint = duplicates(engine, "sales")
    run(lambda _report: None, from_earliest=True)
    return {
        "duplicates_after_crash_replay": after_crash,
        "duplicates_after_lost_checkpoint": after_lost_checkpoint,
        "duplicates_after_full_replay": duplicates(engine, "sales"),
    }


def reference(
    session: SparkSession, engine: Engine, source: spark_adapter.KafkaSource, checkpoint: Path
) -> dict[str, int]:
    """The reference's sink on Spark's checkpoint alone: a crash after batch 1's commit
    (Spark re-runs batch 1), then a lost checkpoint (Spark replays the topic)."""

    def append(received: pd.DataFrame, _batch_id: int) -> None:
        append_reference(engine, received)

    crashed = threading.Event()

    def crash_after_batch_one(received: pd.DataFrame, batch_id: int) -> None:
        append(received, batch_id)
        if batch_id == 1 and not crashed.is_set():
            crashed.set()
            raise SimulatedCrashError("after the commit of batch 1")

    with contextlib.suppress(spark_adapter.StreamFailedError):
        run_query(session, source, checkpoint, crash_after_batch_one, None)
    run_query(session, source, checkpoint, append, None)
    after_crash = duplicates(engine, REFERENCE_TABLE)
    shutil.rmtree(checkpoint)
    run_query(session, source, checkpoint, append, None)
    return {
        "duplicates_after_crash_replay": after_crash,
        "duplicates_after_lost_checkpoint": duplicates(engine, REFERENCE_TABLE),
    }


def duplicates(engine: Engine, table: str) -> int:
    """Rows beyond one per (store, product, date) key."""
    keys = ", ".join(columns.SALES_KEY)
    with engine.connect() as connection:
        total, distinct = connection.execute(
            text(f"SELECT count(*), count(DISTINCT ({keys})) FROM {table}")
        ).one()
    return int(total) - int(distinct)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=3, help="date-shifted copies of the data")
    parser.add_argument(
        "--warmup-copies", type=int, default=1, help="copies sent first, to a cold job"
    )
    parser.add_argument("--rate", type=float, default=50_000, help="offered events/s (0: max)")
    parser.add_argument("--interval", default="2 seconds", help="micro-batch trigger interval")
    parser.add_argument("--batch", type=int, default=200_000, help="max events per micro-batch")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after (seconds)")
    parser.add_argument("--skip-replays", action="store_true")
    parser.add_argument(
        "--data", type=Path, default=None, help="a sfmlops synth folder (default: bundled)"
    )
    parser.add_argument("--days", type=int, default=7, help="with --data: its last days sent")
    args = parser.parse_args()
    settings = Settings()
    jars = spark_adapter.connector_jars(settings.jars_dir)
    dataset = loading.read_dataset(ROSSMANN_DIR)
    if args.data is not None:
        sales = recent_sales(args.data, args.days, set(dataset.stores[columns.STORE_ID]))
        series = len(sales.groupby([columns.STORE_ID, columns.PRODUCT_ID]))
        print(f"{args.data}: the last {args.days} days, {len(sales):,} events, {series:,} series")
        dataset = loading.Dataset(stores=dataset.stores, sales=sales)
    work = Path(tempfile.mkdtemp(prefix="sfmlops-bench-stream-"))
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"started {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; args {vars(args)}")
    try:
        with services(work) as (url, bootstrap, servers):
            engine = make_engine(url)
            migrate(engine)
            with engine.begin() as connection:
                store_records.upsert_stores(connection, dataset.stores)
            session = spark_adapter.make_spark_session(jars)
            # pyspark keeps the JVM it launched as the gateway's process.
            jvm = session.sparkContext._gateway.proc.pid  # type: ignore[union-attr]
            meter = CpuMeter(servers | {"Spark JVM": jvm})
            try:
                copies = shifted_copies(dataset.sales, args.warmup_copies + args.copies)
                warmup = len(dataset.sales) * args.warmup_copies
                phases = {
                    "cold start": copies.iloc[:warmup],
                    "warmed up": copies.iloc[warmup:],
                }
                results = sustained(
                    session,
                    engine,
                    bootstrap,
                    {k: v for k, v in phases.items() if len(v)},
                    args,
                    work,
                    meter,
                )
                for name, values in results.items():
                    print(f"\nSustained (continuous mode), {name}:")
                    for key, value in values.items():
                        print(f"  {key:>20}: {value:,.2f}")
                if not args.skip_replays:
                    print(
                        f"\nReplays (same data: the bundled sales, {len(dataset.sales):,} events):"
                    )
                    for name, counts in replays(
                        session, engine, bootstrap, dataset.sales, args, work
                    ).items():
                        print(f"  {name}: {counts}")
            finally:
                spark_adapter.stop_session(session)
                engine.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
