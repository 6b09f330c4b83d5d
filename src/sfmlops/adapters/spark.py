"""Spark Structured Streaming over Kafka: the session and the sales-event source.

The only module that imports pyspark. Spark's Kafka connector comes from Maven Central
(deps/pom.xml, resolved by scripts/fetch-jars.sh) at exactly the installed pyspark release.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyspark
from py4j.protocol import Py4JError
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession, functions
from pyspark.sql.streaming.query import StreamingQuery

from sfmlops.adapters.kafka_security import PLAINTEXT, STREAM_GROUP_PREFIX, KafkaSecurity
from sfmlops.core import events

CONNECTOR_ARTIFACT = "spark-sql-kafka-0-10_2.13"
CONNECTORS_PROFILE = "spark-connectors"  # the deps/pom.xml profile, and the jars subfolder
PRODUCED_AT = "produced_at"  # the Kafka record timestamp (producer's create time), UTC
_FETCH_BYTES = 64 * 1024 * 1024
_POLL_RECORDS = 100_000
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours"}
LOG_CONFIGURATION = Path(__file__).with_name("spark-log4j2.properties")

BatchHandler = Callable[[pd.DataFrame, int], None]
"""Called once per micro-batch with the received records (see `sales_event_stream`) and the
batch id; it must be idempotent, as Spark re-runs a batch whose checkpoint it did not write."""


class StreamFailedError(RuntimeError):
    """The streaming query stopped on an error; batches committed before it stay."""


class ConnectorJarsError(RuntimeError):
    """Spark's Kafka connector jars are missing or do not match the installed pyspark."""


@dataclass(frozen=True)
class KafkaSource:
    """Where the stream job reads sales events."""

    bootstrap_servers: str
    topic: str
    max_batch_events: int
    security: KafkaSecurity = PLAINTEXT


def connector_jars(jars_dir: Path) -> list[Path]:
    """The connector jars for the installed pyspark, checked.

    Args:
        jars_dir: The jars folder (`Settings.jars_dir`); the connector is in its
            `spark-connectors` subfolder.

    Raises:
        ConnectorJarsError: When the folder holds no connector or one for another Spark release.
    """
    folder = jars_dir / CONNECTORS_PROFILE
    jars = sorted(folder.glob("*.jar"))
    connectors = [jar for jar in jars if jar.name.startswith(CONNECTOR_ARTIFACT + "-")]
    if not connectors:
        raise ConnectorJarsError(
            f"Spark's Kafka connector is not in {folder}: run "
            f"`scripts/fetch-jars.sh {CONNECTORS_PROFILE} {folder}` (needs Maven and Java)"
        )
    wanted = f"{CONNECTOR_ARTIFACT}-{pyspark.__version__}.jar"
    if connectors[0].name != wanted or len(connectors) > 1:
        raise ConnectorJarsError(
            f"{folder} holds {', '.join(j.name for j in connectors)} but pyspark is "
            f"{pyspark.__version__}: re-run scripts/fetch-jars.sh after aligning deps/pom.xml"
        )
    return jars


def make_spark_session(
    jars: list[Path],
    *,
    app_name: str = "sfmlops-stream",
    master: str = "local[2]",
    driver_memory: str = "2g",
    failure_log: Path | None = None,
) -> SparkSession:
    """A Spark session with the Kafka connector on its class path.

    Args:
        jars: From `connector_jars`.
        app_name: Shown in Spark's logs.
        master: `local[N]` on one machine, or a cluster URL.
        driver_memory: JVM heap of the driver (the whole of Spark in local mode).
        failure_log: A file for Spark's report of a failed query (its stack traces), which
            then stays off stderr; None: Spark's default logging.
    """
    builder = SparkSession.builder.appName(app_name).master(master)
    if failure_log is not None:
        # Read by the driver's JVM at its start, which comes after this configuration.
        builder = builder.config(
            "spark.driver.extraJavaOptions",
            " ".join(
                (
                    _java_property("log4j2.configurationFile", LOG_CONFIGURATION),
                    _java_property("sfmlops.stream.log", failure_log),
                )
            ),
        )
    if master.startswith("local"):
        # One machine: keep the driver on loopback rather than whatever the hostname resolves to.
        builder = builder.config("spark.driver.host", "127.0.0.1").config(
            "spark.driver.bindAddress", "127.0.0.1"
        )
    session = (
        builder.config("spark.jars", ",".join(str(jar) for jar in jars))
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("WARN")
    return session


def _java_property(name: str, value: Path) -> str:
    """`-Dname=value`, quoted as Spark's launcher splits its Java options."""
    quoted = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"-D{name}={quoted}"'


def starting_offsets(topic: str, partitions: list[int], next_offsets: dict[int, int]) -> str:
    """Spark's `startingOffsets` for resuming `topic` at `next_offsets`.

    Args:
        topic: The topic.
        partitions: All its partitions now (Spark wants every one named).
        next_offsets: Per partition, the first offset not yet applied; partitions without one
            start at their earliest offset.
    """
    if not next_offsets:
        return "earliest"
    earliest = -2  # Spark's marker for "the earliest offset still in the log"
    every = sorted(set(partitions) | set(next_offsets))
    return json.dumps({topic: {str(p): next_offsets.get(p, earliest) for p in every}})


def sales_event_stream(
    spark: SparkSession, source: KafkaSource, start_at: str = "earliest"
) -> DataFrame:
    """The sales topic as a streaming frame of received records.

    Columns: `events.PAYLOAD` (the value as bytes), `events.TOPIC`, `events.PARTITION`,
    `events.OFFSET` and `PRODUCED_AT`. Payloads are parsed on the Python side
    (`events.decode_sales_events`), where Arrow's JSON reader does it in a fraction of what
    Spark's from_json costs on the two cores the whole pipeline shares.

    Args:
        spark: From `make_spark_session`.
        source: The topic to read.
        start_at: Where a query without a checkpoint starts (`starting_offsets`); by default
            the earliest offset, so nothing is skipped.
    """
    records = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", source.bootstrap_servers)
        .option("subscribe", source.topic)
        .option("startingOffsets", start_at)
        .option("maxOffsetsPerTrigger", str(source.max_batch_events))
        .option("groupIdPrefix", STREAM_GROUP_PREFIX)
        .options(**source.security.spark_options())
        # A micro-batch reads up to maxOffsetsPerTrigger records: fetch them in a few large
        # requests instead of Kafka's default 1 MiB per partition and request.
        .option("kafka.max.partition.fetch.bytes", str(_FETCH_BYTES))
        .option("kafka.fetch.max.bytes", str(_FETCH_BYTES))
        # Spark polls each partition until its batch range is read, and answers every empty
        # poll with offset lookups: hand over a whole fetch per poll rather than 500 records.
        .option("kafka.max.poll.records", str(_POLL_RECORDS))
        .load()
    )
    # The value stays bytes here: Arrow checks UTF-8 on the Python side (`received_frame`) in a
    # fraction of the JVM's cast, on the two cores the whole pipeline shares.
    return records.select(
        functions.col("value").alias(events.PAYLOAD),
        functions.col("topic").alias(events.TOPIC),
        functions.col("partition").alias(events.PARTITION),
        functions.col("offset").alias(events.OFFSET),
        functions.col("timestamp").alias(PRODUCED_AT),
    )


def received_frame(table: pa.Table) -> pd.DataFrame:
    """A collected micro-batch (Arrow) as the pandas frame `BatchHandler` receives.

    The payload becomes text (a missing value: empty; invalid UTF-8 replaced by U+FFFD, so
    every record can still be kept as received). Text columns stay Arrow-backed
    (`string[pyarrow]`): no Python object per value, and the string checks of decoding and
    validation run in Arrow's native code.
    """
    position = table.schema.get_field_index(events.PAYLOAD)
    table = table.set_column(position, events.PAYLOAD, payload_text(table.column(position)))
    frame: pd.DataFrame = table.to_pandas(types_mapper=_text_as_arrow_strings)
    return frame


def payload_text(values: pa.ChunkedArray) -> pa.Array:
    """Kafka record values (bytes) as text: UTF-8 checked in bulk, repaired record by record."""
    filled = pc.fill_null(values.combine_chunks(), b"")
    if pa.types.is_string(filled.type):
        return filled
    try:
        return filled.cast(pa.string())  # validates UTF-8
    except pa.ArrowInvalid:
        return pa.array(
            [value.decode("utf-8", errors="replace") for value in filled.to_pylist()], pa.string()
        )


def _text_as_arrow_strings(arrow_type: pa.DataType) -> Any:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("pyarrow")
    return None


def spark_interval(text: str) -> str:
    """A duration such as `2s`, `500ms` or `1m` in Spark's trigger syntax (`2 seconds`).

    Raises:
        ValueError: When the text is not a positive number followed by ms, s, m or h.
    """
    match = _INTERVAL.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 500ms, 2s, 1m or 1h")
    return f"{match.group(1)} {_UNITS[match.group(2)]}"


def start_sales_stream(
    spark: SparkSession,
    source: KafkaSource,
    handle_batch: BatchHandler,
    checkpoint_dir: Path,
    *,
    interval: str | None,
    start_at: str = "earliest",
    stop: threading.Event | None = None,
) -> RunningStream:
    """Start the query that hands every micro-batch of sales events to `handle_batch`.

    Spark records a batch's offsets in `checkpoint_dir` before running it and marks it done
    only after `handle_batch` returns; after a crash it re-runs the unfinished batch with the
    same offsets.

    Args:
        spark: From `make_spark_session`.
        source: The topic to read.
        handle_batch: Writes one batch (see `BatchHandler`).
        checkpoint_dir: Where Spark keeps the query's offsets and commits.
        interval: Micro-batch interval in Spark syntax (`spark_interval`); None processes
            what the topic holds now, in batches, and stops (trigger availableNow).
        start_at: Where to start when `checkpoint_dir` holds no checkpoint yet
            (`starting_offsets`).
        stop: Setting it stops the stream as `RunningStream.request_stop` does (for a caller
            that learns of a failure on its own thread); None: one of its own.
    """
    stop = stop or threading.Event()
    in_flight = threading.Lock()

    def run_batch(batch: DataFrame, batch_id: int) -> None:
        with in_flight:
            if stop.is_set():
                # Left for the next run: Spark re-runs it from the checkpoint.
                raise StopRequestedError(f"batch {batch_id} not started: stopping")
            # toArrow moves the batch as Arrow or fails; toPandas may fall back to rows silently.
            handle_batch(received_frame(batch.toArrow()), batch_id)

    writer: Any = (
        sales_event_stream(spark, source, start_at)
        .writeStream.queryName(f"sales-events-{source.topic}")
        .option("checkpointLocation", str(checkpoint_dir))
        .foreachBatch(run_batch)
    )
    writer = (
        writer.trigger(availableNow=True)
        if interval is None
        else writer.trigger(processingTime=interval)
    )
    return RunningStream(query=writer.start(), stop=stop, in_flight=in_flight)


class StopRequestedError(RuntimeError):
    """Raised in a micro-batch that would start after a stop was asked for."""


@dataclass
class RunningStream:
    """A started sales stream. Call `request_stop` from anywhere, `wait` from the main thread."""

    query: StreamingQuery
    stop: threading.Event
    in_flight: threading.Lock

    def request_stop(self) -> None:
        """Ask the stream to stop after the batch being written (safe in a signal handler)."""
        self.stop.set()

    def wait(self) -> None:
        """Block until the query ends by itself or a stop is requested, then stop it.

        A batch being written finishes first; a later one does not start.

        Raises:
            StreamFailedError: When the query failed (its batch in flight is not marked done).
        """
        try:
            while self.query.isActive and not self.stop.is_set():
                self.query.awaitTermination(1)
            if self.query.isActive:
                with self.in_flight:  # the batch being written commits first
                    pass
                self.query.stop()
        except StreamingQueryException as error:
            if not self.stop.is_set():
                # Spark's message may carry a Python traceback over many lines; the first says
                # what stopped the query, the rest stays on the cause for a log.
                message = (error.getMessage() or str(error)).strip()
                raise StreamFailedError(message.splitlines()[0] if message else "") from error
        except Py4JError as error:
            # A terminal's Ctrl-C or a group-wide SIGTERM also ends Spark's JVM; when a stop
            # was asked for, that is the stop, not a failure.
            if not self.stop.is_set():
                raise StreamFailedError(f"Spark's JVM went away: {error}") from error


def stop_session(spark: SparkSession) -> None:
    """Stop Spark, tolerating a JVM that already exited."""
    with contextlib.suppress(Py4JError):
        spark.stop()
