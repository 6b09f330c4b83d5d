"""The stream job's Prometheus metrics, served on a port of its own for scraping.

The names match the API's where they mean the same (`sfmlops_sales_ingested_total`,
`sfmlops_dead_letters_total`, with `source="stream"`), so the dashboards and the dead-letter
alert add up every ingest path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from sqlalchemy import Engine

from sfmlops.adapters import kafka
from sfmlops.adapters.db import stream_offset_records
from sfmlops.adapters.kafka_security import PLAINTEXT, KafkaSecurity
from sfmlops.services.stream_ingestion import BatchReport

SOURCE = "stream"


class StreamMetrics:
    """Counters per micro-batch and the Kafka lag, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.records = Counter(
            "sfmlops_stream_records", "Kafka records received.", registry=self.registry
        )
        self.ingested = Counter(
            "sfmlops_sales_ingested", "Sales records stored.", ["source"], registry=self.registry
        )
        self.dead_letters = Counter(
            "sfmlops_dead_letters",
            "Records written to ingest_dead_letters.",
            ["source"],
            registry=self.registry,
        )
        self.batches = Counter(
            "sfmlops_stream_batches", "Micro-batches committed.", registry=self.registry
        )
        self.batch_seconds = Histogram(
            "sfmlops_stream_batch_duration_seconds",
            "Time to decode, validate and write one micro-batch (commit included).",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.lag = Gauge(
            "sfmlops_stream_lag_records",
            "Records in Kafka not yet applied to the database, per partition.",
            ["topic", "partition"],
            registry=self.registry,
        )
        # The timer and the end of each batch both measure the lag: one at a time, so a timer
        # reading that began before a batch's commit cannot finish after the batch's own
        # reading and leave the gauge behind until the next tick.
        self._measuring = threading.Lock()

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Serve /metrics on `port` from a daemon thread."""
        start_http_server(port, addr=address, registry=self.registry)

    def keep_measuring(self, measure: Callable[[], None], every_seconds: float) -> None:
        """Call `measure` every `every_seconds` from a daemon thread, for the life of the process.

        The lag is otherwise measured after each batch only: a job stuck inside a batch (or one
        whose batches stopped) would leave it flat while Kafka fills up, and an alert on a growing
        lag would never fire.
        """

        def loop() -> None:
            while True:
                time.sleep(every_seconds)
                measure()

        threading.Thread(target=loop, name="stream-lag", daemon=True).start()

    def observe(self, batch: BatchReport) -> None:
        """Count one committed micro-batch."""
        self.batches.inc()
        self.records.inc(batch.received)
        self.ingested.labels(source=SOURCE).inc(batch.upserted)
        self.dead_letters.labels(source=SOURCE).inc(batch.dead_lettered)
        self.batch_seconds.observe(batch.prepare_seconds + batch.write_seconds)

    def measure_lag(
        self,
        engine: Engine,
        bootstrap_servers: str,
        topic: str,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        """Set the lag: Kafka's end offsets minus the next offsets the database has applied."""
        with self._measuring:
            with engine.connect() as connection:
                applied = stream_offset_records.read_stream_offsets(connection, topic)
            partitions = kafka.topic_partitions(bootstrap_servers, topic, security=security)
            ends = kafka.end_offsets(bootstrap_servers, topic, partitions, security=security)
            for partition, end in ends.items():
                behind = max(end - applied.get(partition, 0), 0)
                self.lag.labels(topic=topic, partition=str(partition)).set(behind)
