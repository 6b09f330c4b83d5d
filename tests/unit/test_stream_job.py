"""The stream job around Spark: write-behind, where a run starts, received values as text."""

from __future__ import annotations

import json
import threading
import time

import pandas as pd
import psycopg2
import pyarrow as pa
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from sfmlops.adapters.spark import payload_text, starting_offsets
from sfmlops.services.stream_ingestion import PreparedBatch, WriteBehind, one_line


def batch(batch_id: int) -> PreparedBatch:
    return PreparedBatch(batch_id, 1, pd.DataFrame(), [], {}, pd.Series([], dtype=float))


def test_writes_run_one_at_a_time_in_order_behind_the_caller() -> None:
    written: list[int] = []
    in_flight: list[int] = []
    release = threading.Event()

    def write(prepared: PreparedBatch) -> None:
        in_flight.append(prepared.batch_id)
        assert len(in_flight) == 1, "two writes at once"
        if prepared.batch_id == 0:
            release.wait(5)
        written.append(prepared.batch_id)
        in_flight.pop()

    handed_over = threading.Event()

    def hand_over_batch_1() -> None:
        writer.submit(batch(1))
        handed_over.set()

    writer = WriteBehind(write)
    writer.submit(batch(0))  # returns while batch 0 is still being written
    assert written == []
    threading.Thread(target=hand_over_batch_1).start()
    assert not handed_over.wait(0.5), "batch 1 was handed over before batch 0 finished"
    release.set()
    assert handed_over.wait(5), "batch 1 was not handed over once batch 0 finished"
    writer.close()
    assert written == [0, 1]


def test_a_failed_write_fails_the_next_hand_over_and_that_batch_is_not_written() -> None:
    written: list[int] = []

    def write(prepared: PreparedBatch) -> None:
        if prepared.batch_id == 0:
            raise ConnectionError("database went away")
        written.append(prepared.batch_id)

    writer = WriteBehind(write)
    writer.submit(batch(0))
    with pytest.raises(ConnectionError, match="database went away"):
        writer.submit(batch(1))
    writer.close()
    assert written == []


def test_closing_waits_for_the_last_write_and_reports_its_error() -> None:
    writer = WriteBehind(lambda _batch: (time.sleep(0.2), 1 / 0))
    writer.submit(batch(0))
    with pytest.raises(ZeroDivisionError):
        writer.close()


def test_a_run_resumes_at_the_stored_offsets_and_names_every_partition() -> None:
    assert starting_offsets("sales", [0, 1, 2], {}) == "earliest"
    resumed = json.loads(starting_offsets("sales", [0, 1, 2], {0: 42, 2: 7}))
    # Spark wants every partition: one never read yet starts at its earliest offset (-2).
    assert resumed == {"sales": {"0": 42, "1": -2, "2": 7}}


def test_received_values_become_text_even_when_some_are_not_utf8_or_missing() -> None:
    values = pa.chunked_array([[b'{"a": 1}', None], [b"caf\xc3\xa9", b"\xff{"]], pa.binary())
    assert payload_text(values).to_pylist() == ['{"a": 1}', "", "café", "\ufffd{"]
    assert payload_text(pa.chunked_array([[b"ok"]], pa.binary())).type == pa.string()


def test_a_database_error_is_named_in_one_line_by_the_driver_s_first_line() -> None:
    lost = OperationalError(
        "INSERT INTO stream_offsets (topic, kafka_partition, next_offset) VALUES (%(topic)s, ...)",
        {"topic": "sales.daily"},
        psycopg2.OperationalError(
            "server closed the connection unexpectedly\n\tThis probably means the server "
            "terminated abnormally\n\tbefore or while processing the request.\n"
        ),
    )
    assert "\n" in str(lost)  # SQLAlchemy's own text: statement, parameters, link
    assert one_line(lost) == "server closed the connection unexpectedly (OperationalError)"
    with pytest.raises(OperationalError) as raised, create_engine("sqlite://").connect() as db:
        db.execute(text("SELECT * FROM stream_offsets"))
    assert one_line(raised.value) == "no such table: stream_offsets (OperationalError)"
    assert one_line(ValueError("")) == "ValueError"
