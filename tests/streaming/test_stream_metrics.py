"""The stream job's metrics: records, stored and dead-lettered counts, batch time, Kafka lag."""

from __future__ import annotations

import json
import signal
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sfmlops.adapters.db import stream_offset_records
from sfmlops.core import columns
from sfmlops.services.stream_metrics import StreamMetrics
from tests.support.network import free_port
from tests.support.stream_harness import StreamEnv
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def event(store: int, day: str, sales: float) -> tuple[bytes, bytes]:
    record = {
        "schema_version": 1, columns.STORE_ID: store, columns.SALES_DATE: day, columns.SALES: sales,
        columns.CUSTOMERS: 10, columns.OPEN: 1, columns.PROMO: 0, columns.STATE_HOLIDAY: "0", columns.SCHOOL_HOLIDAY: 0,
    }  # fmt: skip
    return str(store).encode(), json.dumps(record).encode()


def scrape(port: int) -> dict[str, float]:
    """Sample name with its labels -> value, from the job's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_the_lag_is_what_kafka_holds_beyond_the_applied_offsets(stream_env: StreamEnv) -> None:
    sent = [event(store, "2015-06-14", 100.0) for store in range(1, 11)]
    stream_env.send([k for k, _ in sent], [v for _, v in sent])
    metrics = StreamMetrics()

    metrics.measure_lag(stream_env.engine, stream_env.broker.bootstrap_servers, stream_env.topic)
    before = {labels["partition"]: value for labels, value in lag_samples(metrics)}
    with stream_env.engine.begin() as connection:
        stream_offset_records.write_stream_offsets(connection, stream_env.topic, {0: 2})
    metrics.measure_lag(stream_env.engine, stream_env.broker.bootstrap_servers, stream_env.topic)
    after = {labels["partition"]: value for labels, value in lag_samples(metrics)}

    assert sum(before.values()) == 10  # nothing applied yet
    assert after["0"] == before["0"] - 2
    assert after["1"] == before["1"]


def lag_samples(metrics: StreamMetrics) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in metrics.registry.collect()
        if family.name == "sfmlops_stream_lag_records"
        for sample in family.samples
    ]


def test_a_running_job_serves_its_metrics(stream_env: StreamEnv) -> None:
    valid = [event(store, "2015-06-14", 100.0 + store) for store in range(1, 9)]
    invalid = [event(3, "2015-06-14", -5.0), event(4242, "2015-06-14", 1.0)]
    sent = valid + invalid
    stream_env.send([k for k, _ in sent], [v for _, v in sent])
    port = free_port()
    running = stream_env.start(
        "stream", "--continuous", "--interval", "1s", SFMLOPS_STREAM_METRICS_PORT=str(port)
    )
    try:
        wait_until(
            lambda: len(stream_env.sales()) == len(valid) and len(stream_env.dead_letters()) == 2,
            timeout=180,
            what="the events to land",
        )

        # The lag is measured after each batch is counted, and on a timer from the start: a
        # gauge read right after the count can still be the timer's from before the batch
        # (10 records behind), so wait for the count and a lag of nothing.
        def caught_up() -> bool:
            scraped = scrape(port)
            lags = [v for name, v in scraped.items() if name.startswith("sfmlops_stream_lag")]
            counted = scraped.get("sfmlops_stream_records_total{}", 0) == len(sent)
            return counted and bool(lags) and sum(lags) == 0

        wait_until(caught_up, timeout=30, what="the metrics to count them and a lag of 0")
        samples = scrape(port)
    finally:
        running.send_signal(signal.SIGTERM)
        output, _ = running.communicate(timeout=60)
    assert running.returncode == 0, output
    assert samples["sfmlops_sales_ingested_total{source=stream}"] == len(valid)
    assert samples["sfmlops_dead_letters_total{source=stream}"] == len(invalid)
    assert samples["sfmlops_stream_batch_duration_seconds_count{}"] >= 1
    lags = [value for name, value in samples.items() if name.startswith("sfmlops_stream_lag")]
    assert lags
    assert sum(lags) == 0


def test_the_lag_moves_while_no_batch_runs(stream_env: StreamEnv) -> None:
    # A job stuck in a batch, or between batches an hour apart, still reports Kafka filling up:
    # the growing-lag alert reads this gauge.
    first = [event(store, "2015-06-14", 100.0) for store in range(1, 4)]
    stream_env.send([k for k, _ in first], [v for _, v in first])
    port = free_port()
    running = stream_env.start(
        "stream",
        "--continuous",
        "--interval",
        "1h",
        SFMLOPS_STREAM_METRICS_PORT=str(port),
        SFMLOPS_STREAM_LAG_SECONDS="0.5",
    )
    try:
        # The first trigger runs at once and applies what the topic holds; the next is an hour off.
        wait_until(lambda: len(stream_env.sales()) == len(first), timeout=180, what="a first batch")
        later = [event(store, "2015-06-15", 100.0) for store in range(1, 5)]
        stream_env.send([k for k, _ in later], [v for _, v in later])

        def lag() -> float:
            samples = scrape(port)
            return sum(v for name, v in samples.items() if name.startswith("sfmlops_stream_lag"))

        wait_until(lambda: lag() == len(later), timeout=30, what="the lag to count the new events")
        rows = len(stream_env.sales())
    finally:
        running.send_signal(signal.SIGTERM)
        output, _ = running.communicate(timeout=60)
    assert running.returncode == 0, output
    assert rows == len(first)  # no batch applied the later events
