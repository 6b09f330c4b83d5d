"""Streaming ingestion: micro-batches of Kafka sales events into the database, exactly once.

A batch is decoded, validated with the same rules as file loading, and written in one
transaction: valid records upserted on their key (the latest offset wins), the others kept as
dead letters keyed by their Kafka position, and, per partition, the offset after the batch's
last record (`stream_offsets`). Each run starts the query at those offsets, so the database,
not Spark's checkpoint, says what has been applied: a crash anywhere, a lost checkpoint or a
database restored from a backup resumes exactly after the last committed batch.

That frees the job to write batch N while Spark reads and decodes batch N+1 (at most one
write in flight): on two cores PostgreSQL's merge and Spark's Kafka read overlap instead of
taking turns. Replaying records anyway (`from_earliest`) leaves the database as applying them
once: upserts and dead letters are idempotent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from sfmlops.adapters import kafka
from sfmlops.adapters.db import (
    dead_letter_records,
    sales_records,
    store_records,
    stream_offset_records,
)
from sfmlops.adapters.spark import (
    PRODUCED_AT,
    KafkaSource,
    RunningStream,
    StreamFailedError,
    make_spark_session,
    start_sales_stream,
    starting_offsets,
    stop_session,
)
from sfmlops.core import events
from sfmlops.core.validation import SalesLimits, validate_sales
from sfmlops.services import realized_accuracy
from sfmlops.services.stream_test_hooks import StreamFaultHooks

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEAD_LETTER_SOURCE = "kafka"


@dataclass(frozen=True)
class PreparedBatch:
    """A micro-batch decoded and validated, ready for its one transaction.

    Attributes:
        batch_id: Spark's micro-batch number.
        received: Kafka records in the batch.
        valid: Canonical sales rows to upsert, in delivery order.
        dead_letters: The refused records with their reasons.
        next_offsets: Per topic and partition, the offset after the batch's last record.
        produced_at: Each record's Kafka timestamp (UTC), for freshness; may be empty.
        prepare_seconds: Time spent decoding and validating.
    """

    batch_id: int
    received: int
    valid: pd.DataFrame
    dead_letters: list[dead_letter_records.DeadLetter]
    next_offsets: dict[str, dict[int, int]]
    produced_at: pd.Series
    prepare_seconds: float = 0.0


@dataclass(frozen=True)
class BatchReport:
    """What one micro-batch did.

    Attributes:
        batch_id: Spark's micro-batch number.
        received: Kafka records in the batch.
        upserted: Valid records handed to the sales upsert (after keeping the latest per key).
        dead_lettered: Records refused, kept in `ingest_dead_letters`.
        committed_at: When the database transaction committed (UTC).
        freshness_seconds: Per received record, commit time minus the record's Kafka timestamp
            (empty when the batch carried no timestamps).
        prepare_seconds: Time spent decoding and validating the batch.
        write_seconds: Time spent in its database transaction, commit included.
    """

    batch_id: int
    received: int
    upserted: int
    dead_lettered: int
    committed_at: dt.datetime
    freshness_seconds: np.ndarray
    prepare_seconds: float = 0.0
    write_seconds: float = 0.0

    def describe(self) -> str:
        """One line for logs: counts and freshness."""
        text = (
            f"batch {self.batch_id}: {self.received:,} records, {self.upserted:,} upserted, "
            f"{self.dead_lettered:,} dead-lettered"
        )
        if len(self.freshness_seconds):
            p50, p95 = np.percentile(self.freshness_seconds, [50, 95])
            text += f", freshness p50 {p50:.1f} s, p95 {p95:.1f} s"
        return text


def prepare_batch(
    received: pd.DataFrame,
    known_store_ids: set[int],
    batch_id: int,
    produced_at: str | None = None,
    limits: SalesLimits | None = None,
) -> PreparedBatch:
    """Decode and validate one batch of received Kafka records (no I/O).

    Args:
        received: One row per Kafka record, as `adapters.spark.sales_event_stream` yields
            (see `events.decode_sales_events`).
        known_store_ids: Stores in the store metadata.
        batch_id: Spark's micro-batch number.
        produced_at: Name of a column with each record's Kafka timestamp, for freshness.
        limits: Plausible dates and amounts (default `SalesLimits()`, dated today).
    """
    started = time.perf_counter()
    received = received.reset_index(drop=True)
    stamps = (
        pd.to_datetime(received[produced_at], utc=True)
        if produced_at is not None
        else pd.Series([], dtype="datetime64[ns, UTC]")
    )
    if received.empty:
        return PreparedBatch(batch_id, 0, pd.DataFrame(), [], {}, stamps)
    decoded = events.decode_sales_events(received)
    validated = validate_sales(
        decoded.records, known_store_ids, reject_duplicates=False, limits=limits
    )
    # validate_sales numbers rows 0..n-1; map them back to positions in `received`.
    positions = decoded.records.index.to_numpy()
    reasons = decoded.rejected | {
        int(positions[row]): reason for row, reason in validated.reasons_by_row().items()
    }
    return PreparedBatch(
        batch_id=batch_id,
        received=len(received),
        valid=validated.valid,
        dead_letters=_dead_letters(received, reasons),
        next_offsets=_next_offsets(received),
        produced_at=stamps,
        prepare_seconds=time.perf_counter() - started,
    )


def write_batch(
    engine: Engine,
    batch: PreparedBatch,
    before_commit: Callable[[PreparedBatch], None] | None = None,
) -> BatchReport:
    """Write one prepared batch and its resume offsets in one transaction.

    Args:
        engine: The sales database.
        batch: From `prepare_batch`.
        before_commit: Test hook, called inside the transaction just before it commits.

    Returns:
        What was written.
    """
    started = time.perf_counter()
    upserted = 0
    if batch.received:
        with engine.begin() as connection:
            upserted = sales_records.upsert_sales(connection, batch.valid)
            dead_letter_records.add_dead_letters(connection, batch.dead_letters)
            for topic, next_offsets in batch.next_offsets.items():
                stream_offset_records.write_stream_offsets(connection, topic, next_offsets)
            if before_commit is not None:
                before_commit(batch)
    committed_at = dt.datetime.now(dt.UTC)
    freshness = (pd.Timestamp(committed_at) - batch.produced_at).dt.total_seconds().to_numpy()
    # After the commit, outside the batch's transaction: a scoring failure never undoes it.
    realized_accuracy.score_actuals(engine, realized_accuracy.sales_days(batch.valid))
    return BatchReport(
        batch_id=batch.batch_id,
        received=batch.received,
        upserted=upserted,
        dead_lettered=len(batch.dead_letters),
        committed_at=committed_at,
        freshness_seconds=freshness,
        prepare_seconds=batch.prepare_seconds,
        write_seconds=time.perf_counter() - started,
    )


def _dead_letters(
    received: pd.DataFrame, reasons: dict[int, str]
) -> list[dead_letter_records.DeadLetter]:
    rows = received.loc[sorted(reasons), [events.PAYLOAD, *events.RECORD_POSITION]]
    return [
        dead_letter_records.DeadLetter(
            source=DEAD_LETTER_SOURCE,
            # PostgreSQL text cannot hold NUL; keep the character visible instead.
            payload=str(payload).replace("\x00", "\\u0000"),
            reason=reasons[int(position)],
            kafka_topic=str(topic),
            kafka_partition=int(partition),
            kafka_offset=int(offset),
        )
        for position, payload, topic, partition, offset in rows.itertuples(name=None)
    ]


def _next_offsets(received: pd.DataFrame) -> dict[str, dict[int, int]]:
    """Per topic and partition, one past the highest offset received (where to resume)."""
    last = received.groupby([events.TOPIC, events.PARTITION], observed=True)[events.OFFSET].max()
    offsets: dict[str, dict[int, int]] = {}
    topics = last.index.get_level_values(0).tolist()
    partitions = last.index.get_level_values(1).tolist()
    for topic, partition, offset in zip(topics, partitions, last.tolist(), strict=True):
        offsets.setdefault(str(topic), {})[int(partition)] = int(offset) + 1
    return offsets


class WriteBehind:
    """Runs batch writes on one background thread, at most one in flight.

    Handing over batch N+1 first waits for batch N's write; a write's error comes out of the
    hand-over that follows it, or out of `close`.
    """

    def __init__(self, write: Callable[[PreparedBatch], Any]) -> None:
        self._write = write
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sales-writer")
        self._pending: Future[Any] | None = None

    def submit(self, batch: PreparedBatch) -> None:
        """Start writing `batch` once the previous write has finished.

        Raises:
            Exception: Whatever the previous write raised; `batch` is then not written.
        """
        self.wait()
        self._pending = self._executor.submit(self._write, batch)

    def wait(self) -> None:
        """Block until the write in flight, if any, has finished; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Finish the write in flight and stop the thread; re-raise the write's error."""
        try:
            self.wait()
        finally:
            self._executor.shutdown()


class StreamDatabaseError(RuntimeError):
    """The stream job's database failed it; the message is one line: what, where, why."""


@dataclass
class SalesStream:
    """A running stream into the database: `request_stop` from anywhere, `wait` from the
    thread that started it."""

    running: RunningStream
    writer: WriteBehind
    database_failures: list[StreamDatabaseError]

    def request_stop(self) -> None:
        """Stop after the batch in hand; the write in flight commits first."""
        self.running.request_stop()

    def wait(self) -> None:
        """Block until the stream ends (drained topic or stop) and its last write commits.

        Raises:
            adapters.spark.StreamFailedError: When reading or writing a batch failed; every
                batch committed before it stays, and the next run resumes after it.
        """
        query_failure: StreamFailedError | None = None
        try:
            self.running.wait()
        except StreamFailedError as error:
            query_failure = error
        finally:
            # A failed write is in `database_failures` already; nothing else can fail here.
            with contextlib.suppress(StreamDatabaseError):
                self.writer.close()
        if self.database_failures:
            # The database failed first: Spark's own report of the stop only follows from it.
            first = self.database_failures[0]
            raise StreamFailedError(str(first)) from first
        if query_failure is not None:
            raise query_failure


def one_line(error: BaseException) -> str:
    """What went wrong, in one line: a database error by its driver's first line and type.

    SQLAlchemy's own text adds the statement, its parameters and a link over several lines;
    the whole chain stays on the exception for a log.
    """
    cause: BaseException = error
    if isinstance(error, DBAPIError) and isinstance(error.orig, BaseException):
        cause = error.orig
    lines = str(cause).strip().splitlines()
    kind = type(cause).__name__
    return f"{lines[0].strip()} ({kind})" if lines else kind


def start_stream(
    spark: SparkSession,
    engine: Engine,
    source: KafkaSource,
    checkpoint_dir: Path,
    *,
    interval: str | None,
    on_batch: Callable[[BatchReport], None],
    from_earliest: bool = False,
    faults: StreamFaultHooks | None = None,
    limits: Callable[[], SalesLimits] = SalesLimits,
) -> SalesStream:
    """Start streaming `source` into the database from where the database says it stopped.

    Args:
        spark: A session from `adapters.spark.make_spark_session`.
        engine: The sales database (PostgreSQL in production; any backend works).
        source: The topic to read.
        checkpoint_dir: Spark's checkpoint of this run; emptied at the start, since the
            database's offsets decide where a run starts.
        interval: Micro-batch interval in Spark syntax; None drains the topic and ends.
        on_batch: Called with each batch's report after its commit (on the writer thread).
        from_earliest: Re-apply every event the topic still holds instead of resuming.
        faults: Test-only crash points (`stream_test_hooks`); None: none.
        limits: Plausibility bounds, asked for anew each batch (today moves on).

    Raises:
        adapters.spark.StreamFailedError: When the broker cannot say which partitions the
            topic has (needed to resume).
    """
    with engine.connect() as connection:
        resume = (
            {}
            if from_earliest
            else stream_offset_records.read_stream_offsets(connection, source.topic)
        )
    try:
        partitions = (
            kafka.topic_partitions(source.bootstrap_servers, source.topic, security=source.security)
            if resume
            else []
        )
    except (kafka.KafkaUnreachableError, kafka.KafkaAuthenticationError) as error:
        raise StreamFailedError(str(error)) from error
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    hooks = faults or StreamFaultHooks()

    def before_commit(batch: PreparedBatch) -> None:
        hooks.before_commit_of(batch.batch_id)

    database = engine.url.render_as_string(hide_password=True)
    failures: list[StreamDatabaseError] = []
    stop = threading.Event()

    def failed(doing: str, error: Exception) -> StreamDatabaseError:
        failure = StreamDatabaseError(
            f"{doing} the database at {database} failed: {one_line(error)}"
        )
        failures.append(failure)
        # A write fails on the writer's thread; left alone, its error would come out only when
        # the next batch is handed over, which a continuous job on a quiet topic may wait for
        # indefinitely. The failed batch is not committed: the next run resumes before it.
        stop.set()
        return failure

    def write(batch: PreparedBatch) -> None:
        try:
            report = write_batch(engine, batch, before_commit)
        except Exception as error:
            raise failed(f"writing batch {batch.batch_id} to", error) from error
        on_batch(report)
        hooks.after_commit_of(batch.batch_id)

    writer = WriteBehind(write)

    def handle(received: pd.DataFrame, batch_id: int) -> None:
        hooks.batch_received(batch_id)
        try:
            with engine.connect() as connection:
                known = store_records.store_ids(connection)
        except SQLAlchemyError as error:
            raise failed(f"reading the stores of batch {batch_id} from", error) from error
        writer.submit(prepare_batch(received, known, batch_id, PRODUCED_AT, limits()))

    running = start_sales_stream(
        spark,
        source,
        handle,
        checkpoint_dir,
        interval=interval,
        start_at=starting_offsets(source.topic, partitions, resume),
        stop=stop,
    )
    return SalesStream(running=running, writer=writer, database_failures=failures)


def run_stream(
    engine: Engine,
    source: KafkaSource,
    checkpoint_dir: Path,
    jars: list[Path],
    *,
    interval: str | None,
    on_batch: Callable[[BatchReport], None],
    from_earliest: bool = False,
    faults: StreamFaultHooks | None = None,
    master: str = "local[2]",
    limits: Callable[[], SalesLimits] = SalesLimits,
    failure_log: Path | None = None,
) -> None:
    """Run the stream job until the topic is drained (`interval` None) or a stop signal.

    SIGTERM and SIGINT stop a continuous job between batches; the batch being written commits
    first.

    Args:
        engine: The sales database (PostgreSQL in production; any backend works).
        source: The topic to read.
        checkpoint_dir: Spark's checkpoint of this run.
        jars: Spark's Kafka connector (`adapters.spark.connector_jars`).
        interval: Micro-batch interval in Spark syntax; None drains the topic and returns.
        on_batch: Called with each batch's report after its commit.
        from_earliest: Re-apply every event the topic still holds instead of resuming.
        faults: Test-only crash points (`stream_test_hooks`); None: none.
        master: Spark master URL.
        limits: Plausibility bounds, asked for anew each batch.
        failure_log: Where Spark writes its report of a failed query (stack traces) instead
            of stderr; None: Spark's default logging.

    Raises:
        adapters.spark.StreamFailedError: When the query stops on an error (e.g. the database
            is unreachable); what was committed before stays.
    """
    spark = make_spark_session(jars, master=master, failure_log=failure_log)
    previous: dict[signal.Signals, Any] = {}
    try:
        stream = start_stream(
            spark,
            engine,
            source,
            checkpoint_dir,
            interval=interval,
            on_batch=on_batch,
            from_earliest=from_earliest,
            faults=faults,
            limits=limits,
        )
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            previous[stop_signal] = signal.signal(stop_signal, lambda *_: stream.request_stop())
        stream.wait()
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
        stop_session(spark)
