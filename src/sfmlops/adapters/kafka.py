"""Kafka producer side: the idempotent producer, the sales topic and its end offsets
(confluent-kafka).

The only module that imports confluent_kafka.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._metadata import TopicMetadata  # not re-exported for type checkers
from confluent_kafka.cimpl import NewTopic

from sfmlops.adapters.kafka_security import PLAINTEXT, STREAM_GROUP_PREFIX, KafkaSecurity

_FLUSH_TIMEOUT_SECONDS = 300.0
_PACING_CHUNK_SECONDS = 0.05  # rate-limited producers send in slices this long
_MAX_RATE_CHUNK = 20_000  # events sent between progress reports at full speed


class KafkaDeliveryError(RuntimeError):
    """Kafka did not acknowledge some events; the message names the first failure."""


class KafkaUnreachableError(RuntimeError):
    """The broker did not answer a metadata request in time."""


class KafkaAuthenticationError(RuntimeError):
    """The broker refused the client's credentials (SASL authentication failed)."""


class KafkaAuthorizationError(RuntimeError):
    """The broker refused an operation the client's user has no ACL for."""


@dataclass
class _AuthenticationWatch:
    """A client's error callback that keeps the broker's refusal of its credentials.

    librdkafka reports a failed SASL handshake only through this callback; the request that
    needed the connection would otherwise just time out.
    """

    bootstrap_servers: str
    security: KafkaSecurity
    refusal: str | None = None

    def __call__(self, error: KafkaError) -> None:
        if error.code() == KafkaError._AUTHENTICATION and self.refusal is None:
            self.refusal = error.str()

    def config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "error_cb": self,
        } | self.security.client_config()

    def raise_if_refused(self) -> None:
        if self.refusal is not None:
            raise KafkaAuthenticationError(
                f"Kafka at {self.bootstrap_servers} refused to authenticate "
                f"{self.security.describe()}: {self.refusal} "
                "(check SFMLOPS_KAFKA_USERNAME and SFMLOPS_KAFKA_PASSWORD)"
            )


@dataclass
class _Failures:
    """Delivery reports; the producer sends them only for failed events."""

    count: int = 0
    first_error: str | None = None

    def __call__(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            return
        self.count += 1
        if self.first_error is None:
            self.first_error = str(error)


def ensure_topic(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    timeout: float = 30.0,
    *,
    security: KafkaSecurity = PLAINTEXT,
) -> None:
    """Create `topic` with `partitions` partitions unless it exists.

    Raises:
        KafkaAuthenticationError: When the broker refuses the credentials of `security`.
        KafkaAuthorizationError: When the user may not see or create the topic.
        KafkaException: When the broker is unreachable or refuses the topic.
    """
    watch = _AuthenticationWatch(bootstrap_servers, security)
    admin = AdminClient(watch.config())
    metadata = _topic_metadata(admin, watch, topic, timeout)
    if metadata is not None:
        if metadata.error is None:
            return
        if metadata.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise _not_authorized(bootstrap_servers, security, f"describe topic {topic}")
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions)])
    try:
        futures[topic].result(timeout)
    except KafkaException as error:
        code = error.args[0].code()
        if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise _not_authorized(bootstrap_servers, security, f"create topic {topic}") from error
        if code != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def _topic_metadata(
    admin: AdminClient, watch: _AuthenticationWatch, topic: str, timeout: float
) -> TopicMetadata | None:
    """`topic`'s metadata (None: no such topic), failing fast when the credentials are refused.

    Asks in one-second slices and serves the error callback in between: a refused login
    would otherwise look like a broker that does not answer for the whole `timeout`.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin.list_topics(topic, timeout=min(1.0, timeout)).topics.get(topic)
        except KafkaException:
            admin.poll(0)
            watch.raise_if_refused()
            if time.monotonic() >= deadline:
                raise


def _not_authorized(
    bootstrap_servers: str, security: KafkaSecurity, operation: str
) -> KafkaAuthorizationError:
    return KafkaAuthorizationError(
        f"Kafka at {bootstrap_servers} refused to {operation} for {security.describe()}: "
        "no ACL grants it"
    )


def topic_partitions(
    bootstrap_servers: str,
    topic: str,
    timeout: float = 30.0,
    *,
    security: KafkaSecurity = PLAINTEXT,
) -> list[int]:
    """The partition numbers of `topic` (empty when it does not exist yet).

    Raises:
        KafkaAuthenticationError: When the broker refuses the credentials of `security`.
        KafkaUnreachableError: When the broker does not answer within `timeout` seconds.
    """
    watch = _AuthenticationWatch(bootstrap_servers, security)
    admin = AdminClient(watch.config())
    try:
        metadata = _topic_metadata(admin, watch, topic, timeout)
    except KafkaException as error:
        raise KafkaUnreachableError(
            f"Kafka at {bootstrap_servers} did not list topic {topic}: {error}"
        ) from error
    if metadata is None or metadata.error is not None:
        return []
    return sorted(metadata.partitions)


def end_offsets(
    bootstrap_servers: str,
    topic: str,
    partitions: Sequence[int],
    timeout: float = 10.0,
    *,
    security: KafkaSecurity = PLAINTEXT,
) -> dict[int, int]:
    """Per partition of `topic`, the offset the next record will get (the log end offset).

    Raises:
        KafkaUnreachableError: When the broker does not answer within `timeout` seconds.
    """
    # The group is never joined; its name is under the stream job's ACL prefix all the same.
    consumer = Consumer(
        {"bootstrap.servers": bootstrap_servers, "group.id": f"{STREAM_GROUP_PREFIX}-lag"}
        | security.client_config()
    )
    try:
        return {
            partition: int(
                consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)[1]
            )
            for partition in partitions
        }
    except KafkaException as error:
        raise KafkaUnreachableError(
            f"Kafka at {bootstrap_servers} did not give the offsets of {topic}: {error}"
        ) from error
    finally:
        consumer.close()


def make_producer(
    bootstrap_servers: str,
    *,
    security: KafkaSecurity = PLAINTEXT,
    **overrides: str | int | bool,
) -> Producer:
    """An idempotent producer: acks from all in-sync replicas, retries without duplicates."""
    config: dict[str, str | int | bool] = {
        **security.client_config(),
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        # Keep retrying through a broker restart; the idempotent producer never duplicates.
        "message.timeout.ms": 300_000,
        # A Python callback per acknowledged event cost a quarter of the sending CPU; what is
        # still queued after a flush plus the failures reported tells the same.
        "delivery.report.only.error": True,
    }
    return Producer(config | overrides)


def send(
    producer: Producer,
    topic: str,
    keys: Sequence[bytes],
    values: Sequence[bytes],
    *,
    rate: float | None = None,
    on_ack: Callable[[int], None] | None = None,
) -> int:
    """Send events in order and wait until Kafka acknowledged every one.

    Args:
        producer: From `make_producer`.
        topic: Destination topic.
        keys: One key per event (the partitioning key).
        values: The event payloads.
        rate: Events per second; None sends as fast as the broker takes them.
        on_ack: Called with the number of events acknowledged since the last call.

    Returns:
        The number of events acknowledged.

    Raises:
        KafkaDeliveryError: When any event was not acknowledged within the producer's timeout.
    """
    failures = _Failures()
    acknowledged = 0

    def report_progress(sent: int, queued: int) -> None:
        nonlocal acknowledged
        now = sent - queued - failures.count
        if on_ack and now > acknowledged:
            on_ack(now - acknowledged)
        acknowledged = max(acknowledged, now)

    started = time.monotonic()
    chunk = _MAX_RATE_CHUNK if rate is None else max(1, int(rate * _PACING_CHUNK_SECONDS))
    for start in range(0, len(values), chunk):
        if rate is not None:
            # Pace against the start time rather than per event, so sleeps do not drift.
            delay = started + start / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for key, value in zip(
            keys[start : start + chunk], values[start : start + chunk], strict=True
        ):
            _produce(producer, topic, key, value, failures)
        producer.poll(0)
        report_progress(min(start + chunk, len(values)), len(producer))
    remaining = producer.flush(_FLUSH_TIMEOUT_SECONDS)
    report_progress(len(values), remaining)
    if failures.count or remaining:
        raise KafkaDeliveryError(
            f"{failures.count + remaining} of {len(values)} events not acknowledged by Kafka"
            + (f" (first error: {failures.first_error})" if failures.first_error else "")
        )
    return acknowledged


def _produce(producer: Producer, topic: str, key: bytes, value: bytes, failures: _Failures) -> None:
    while True:
        try:
            producer.produce(topic, value, key, on_delivery=failures)
            return
        except BufferError:
            # The local queue is full: serve delivery reports until there is room.
            producer.poll(0.1)
