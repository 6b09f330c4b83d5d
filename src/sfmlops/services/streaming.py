"""Streaming ingestion: one micro-batch of Kafka sales events into the database, exactly once.

A batch is decoded, validated with the same rules as file loading, and written in one
transaction: valid records upserted on their key (the latest offset wins), the others kept as
dead letters keyed by their Kafka position. Writing the same batch twice, as Spark does after a
crash between the database commit and its checkpoint, or replaying the whole topic after a lost
checkpoint, leaves the database as writing it once.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from sfmlops.adapters.db import repository
from sfmlops.adapters.spark import (
    PRODUCED_AT,
    KafkaSource,
    make_spark_session,
    start_sales_stream,
    stop_session,
)
from sfmlops.core import events
from sfmlops.core.validation import validate_sales

DEAD_LETTER_SOURCE = "kafka"


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
    """

    batch_id: int
    received: int
    upserted: int
    dead_lettered: int
    committed_at: dt.datetime
    freshness_seconds: np.ndarray

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


def ingest_batch(
    engine: Engine, received: pd.DataFrame, batch_id: int, produced_at: str | None = None
) -> BatchReport:
    """Decode, validate and write one batch of received Kafka records in one transaction.

    Args:
        engine: The sales database.
        received: One row per Kafka record, as `adapters.spark.sales_event_stream` yields
            (see `events.decode_sales_events`).
        batch_id: Spark's micro-batch number, for the report.
        produced_at: Name of a column with each record's Kafka timestamp, for freshness.

    Returns:
        What was written.
    """
    received = received.reset_index(drop=True)
    if received.empty:
        return BatchReport(batch_id, 0, 0, 0, dt.datetime.now(dt.UTC), np.empty(0))
    decoded = events.decode_sales_events(received)
    with engine.begin() as connection:
        known = repository.store_ids(connection)
        validated = validate_sales(decoded.records, known, reject_duplicates=False)
        # validate_sales numbers rows 0..n-1; map them back to positions in `received`.
        positions = decoded.records.index.to_numpy()
        reasons = decoded.rejected | {
            int(positions[row]): reason for row, reason in validated.reasons_by_row().items()
        }
        upserted = repository.upsert_sales(connection, validated.valid)
        repository.add_dead_letters(connection, _dead_letters(received, reasons))
    committed_at = dt.datetime.now(dt.UTC)
    freshness: np.ndarray = np.empty(0)
    if produced_at is not None and len(received):
        stamps = pd.to_datetime(received[produced_at], utc=True)
        freshness = (pd.Timestamp(committed_at) - stamps).dt.total_seconds().to_numpy()
    return BatchReport(
        batch_id=batch_id,
        received=len(received),
        upserted=upserted,
        dead_lettered=len(reasons),
        committed_at=committed_at,
        freshness_seconds=freshness,
    )


def _dead_letters(received: pd.DataFrame, reasons: dict[int, str]) -> list[repository.DeadLetter]:
    rows = received.loc[sorted(reasons), [events.PAYLOAD, *events.RECORD_POSITION]]
    return [
        repository.DeadLetter(
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


def run_stream(
    engine: Engine,
    source: KafkaSource,
    checkpoint_dir: Path,
    jars: list[Path],
    *,
    interval: str | None,
    on_batch: Callable[[BatchReport], None],
    fault_after_commit: int | None = None,
    master: str = "local[2]",
) -> None:
    """Run the stream job until the topic is drained (`interval` None) or a stop signal.

    SIGTERM and SIGINT stop a continuous job between batches; a batch in flight either commits
    whole or is re-run by the next start.

    Args:
        engine: The sales database (PostgreSQL in production; any backend works).
        source: The topic to read.
        checkpoint_dir: Spark's checkpoint of this query.
        jars: Spark's Kafka connector (`adapters.spark.connector_jars`).
        interval: Micro-batch interval in Spark syntax; None drains the topic and returns.
        on_batch: Called with each batch's report after its commit.
        fault_after_commit: Test hook: SIGKILL this process right after batch N commits to
            the database, before Spark writes its checkpoint.
        master: Spark master URL.

    Raises:
        adapters.spark.StreamFailedError: When the query stops on an error (e.g. the database
            is unreachable); what was committed before stays.
    """
    spark = make_spark_session(jars, master=master)

    def handle(received: pd.DataFrame, batch_id: int) -> None:
        report = ingest_batch(engine, received, batch_id, PRODUCED_AT)
        on_batch(report)
        if fault_after_commit is not None and batch_id == fault_after_commit:
            os.kill(os.getpid(), signal.SIGKILL)

    previous: dict[signal.Signals, Any] = {}
    try:
        stream = start_sales_stream(spark, source, handle, checkpoint_dir, interval=interval)
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            previous[stop_signal] = signal.signal(stop_signal, lambda *_: stream.request_stop())
        stream.wait()
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
        stop_session(spark)
