"""Kafka with SASL/SCRAM-SHA-512 and ACLs: each client does its job and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from sfmlops.adapters import kafka
from sfmlops.adapters.kafka_security import STREAM_GROUP_PREFIX, KafkaSecurity
from tests.support.stream_harness import StreamEnv

pytestmark = pytest.mark.integration

# A read without the ACLs is refused on the group (offset lookup) or on the topic (fetch).
REFUSED = {KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED}


def grant_producer_and_stream(env: StreamEnv) -> None:
    """The ACLs of the deployment: the producer writes (and creates) the topic, the stream
    job reads it with its own consumer groups."""
    env.broker.grant("producer", env.topic, "WRITE", "CREATE", "DESCRIBE")
    env.broker.grant("stream", env.topic, "READ", "DESCRIBE", group_prefix=STREAM_GROUP_PREFIX)


def test_the_producer_and_the_stream_job_each_with_their_own_user_deliver_the_sales(
    sasl_stream_env: StreamEnv, rossmann_slice: Path
) -> None:
    env, broker = sasl_stream_env, sasl_stream_env.broker
    grant_producer_and_stream(env)
    produced = env.run(
        "produce",
        "--file",
        str(rossmann_slice / "train.csv.gz"),
        "--start",
        "2015-06-12",
        **broker.client_env("producer"),
    )
    assert produced.returncode == 0, produced.stdout + produced.stderr
    assert "Sent 40 events" in produced.stdout  # 20 stores, 2 days

    streamed = env.run("stream", "--once", **broker.client_env("stream"))

    assert streamed.returncode == 0, streamed.stdout + streamed.stderr
    assert len(env.sales()) == 40


def test_a_wrong_password_is_refused_saying_which_user_and_broker(
    sasl_stream_env: StreamEnv, rossmann_slice: Path
) -> None:
    env, broker = sasl_stream_env, sasl_stream_env.broker
    grant_producer_and_stream(env)

    result = env.run(
        "produce",
        "--file",
        str(rossmann_slice / "train.csv.gz"),
        "--start",
        "2015-06-12",
        **broker.client_env("producer", password="not-the-password"),
    )

    assert result.returncode != 0
    message = " ".join((result.stdout + result.stderr).split())
    assert f"Kafka at {broker.bootstrap_servers} refused to authenticate user 'producer'" in (
        message
    )
    assert "SFMLOPS_KAFKA_PASSWORD" in message
    assert "Traceback" not in message


def test_a_user_without_an_acl_on_the_topic_can_neither_write_nor_read_it(
    sasl_stream_env: StreamEnv,
) -> None:
    env, broker = sasl_stream_env, sasl_stream_env.broker
    grant_producer_and_stream(env)
    env.security = broker.security("producer")
    env.send([b"1"], [b"{}"])

    stranger = broker.security("stranger")
    with pytest.raises(kafka.KafkaAuthorizationError, match="no ACL grants it"):
        kafka.ensure_topic(broker.bootstrap_servers, env.topic, 2, security=stranger)
    assert first_read_error(env, stranger) in REFUSED
    # The producer's user may write the topic but not read it; the stream job's reads.
    assert first_read_error(env, broker.security("producer")) in REFUSED
    assert first_read_error(env, broker.security("stream")) is None


def first_read_error(env: StreamEnv, security: KafkaSecurity) -> int | None:
    """The error code of reading partition 0 from the start as `security`'s user (None: read)."""
    consumer = Consumer(
        {
            "bootstrap.servers": env.broker.bootstrap_servers,
            "group.id": f"{STREAM_GROUP_PREFIX}-check",
            "enable.auto.commit": False,
        }
        | security.client_config()
    )
    consumer.assign([TopicPartition(env.topic, partition, 0) for partition in (0, 1)])
    try:
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is None:
                return None
            if error.code() != KafkaError._PARTITION_EOF:
                return int(error.code())
        raise AssertionError("neither a record nor an error within 30 s")
    finally:
        consumer.close()
