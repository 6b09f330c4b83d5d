"""`sfmlops produce` against a real broker: what lands on the topic, and what is refused."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from sfmlops.adapters import kafka
from tests.support.network import free_port
from tests.support.stream_harness import StreamEnv

pytestmark = pytest.mark.integration


def consume_all(env: StreamEnv, expected: int) -> list[tuple[bytes, dict[str, object]]]:
    consumer = Consumer(
        {
            "bootstrap.servers": env.broker.bootstrap_servers,
            "group.id": f"check-{env.topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([env.topic])
    received: list[tuple[bytes, dict[str, object]]] = []
    try:
        for _ in range(120):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                received.append((message.key(), json.loads(message.value())))
            if len(received) >= expected and message is None:
                break
    finally:
        consumer.close()
    return received


def test_a_file_is_sent_as_one_keyed_versioned_event_per_record(
    stream_env: StreamEnv, rossmann_slice: Path
) -> None:
    result = stream_env.run(
        "produce", "--file", str(rossmann_slice / "train.csv.gz"), "--start", "2015-06-12"
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Sent 40 events" in result.stdout
    received = consume_all(stream_env, 40)
    assert len(received) == 40
    assert {event["sales_date"] for _, event in received} == {"2015-06-12", "2015-06-13"}
    assert all(key == str(event["store_id"]).encode() for key, event in received)
    assert all(event["schema_version"] == 1 for _, event in received)


def test_live_replays_each_store_re_dated_to_the_day_after_as_of(
    stream_env: StreamEnv, rossmann_slice: Path
) -> None:
    assert stream_env.run("load-data", "--path", str(rossmann_slice)).returncode == 0

    result = stream_env.run("produce", "--from-db", "--live", "--rate", "200")

    assert result.returncode == 0, result.stdout + result.stderr
    received = consume_all(stream_env, 20)
    assert len(received) == 20
    assert {event["sales_date"] for _, event in received} == {"2015-06-14"}
    stored = stream_env.sales()
    last_day = stored[stored["sales_date"] == pd.Timestamp("2015-06-13")]
    assert sorted(event["sales"] for _, event in received) == sorted(last_day["sales"].tolist())


def test_a_bad_file_is_refused_whole_and_nothing_is_sent(
    stream_env: StreamEnv, rossmann_slice: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(rossmann_slice, bad)
    frame = pd.read_csv(bad / "train.csv.gz", dtype=str, keep_default_na=False)
    frame.loc[3, "Sales"] = "-5"
    with gzip.open(bad / "train.csv.gz", "wt") as out:
        frame.to_csv(out, index=False)

    result = stream_env.run("produce", "--file", str(bad / "train.csv.gz"))
    no_broker = stream_env.run(
        "produce", "--file", str(bad / "train.csv.gz"), SFMLOPS_KAFKA_BOOTSTRAP_SERVERS=""
    )

    assert result.returncode == 1
    assert "line 5, column Sales: must be >= 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert no_broker.returncode == 1
    assert "SFMLOPS_KAFKA_BOOTSTRAP_SERVERS" in no_broker.stderr
    topics = AdminClient({"bootstrap.servers": stream_env.broker.bootstrap_servers}).list_topics(
        timeout=30
    )
    assert stream_env.topic not in topics.topics


def test_events_kafka_never_acknowledges_are_counted_and_reported() -> None:
    # Nothing listens on this port: every event times out in the producer's queue.
    nowhere = f"127.0.0.1:{free_port()}"
    producer = kafka.make_producer(nowhere, **{"message.timeout.ms": 1500})
    acknowledged: list[int] = []

    with pytest.raises(kafka.KafkaDeliveryError, match="3 of 3 events not acknowledged"):
        kafka.send(producer, "sales.daily", [b"1"] * 3, [b"{}"] * 3, on_ack=acknowledged.append)
    assert acknowledged == []


def test_an_unreachable_broker_is_named_when_listing_partitions() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    with pytest.raises(kafka.KafkaUnreachableError, match=nowhere):
        kafka.topic_partitions(nowhere, "sales.daily", timeout=1.0)
