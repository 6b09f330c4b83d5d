"""One micro-batch into the database (no Spark): same rules as files, idempotent on replay."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine

from sfmlops.adapters.db import (
    dead_letter_records,
    sales_records,
    store_records,
    stream_offset_records,
)
from sfmlops.adapters.db import issued_forecasts as records
from sfmlops.core import columns, events
from sfmlops.services import loading
from sfmlops.services.stream_ingestion import BatchReport, PreparedBatch, prepare_batch, write_batch

pytestmark = pytest.mark.integration


def received(payloads: list[str]) -> pd.DataFrame:
    """A batch as the stream job builds it, from JSON texts (all on partition 0)."""
    return pd.DataFrame(
        {
            events.PAYLOAD: payloads,
            events.TOPIC: "sales.daily",
            events.PARTITION: 0,
            events.OFFSET: range(len(payloads)),
            "produced_at": pd.Timestamp("2026-01-01", tz="UTC"),
        }
    )


def ingest_batch(
    engine: Engine, batch: pd.DataFrame, batch_id: int, produced_at: str
) -> BatchReport:
    """One batch through the stream job's two steps, synchronously."""
    with engine.connect() as connection:
        known = store_records.store_ids(connection)
    return write_batch(engine, prepare_batch(batch, known, batch_id, produced_at))


def event(store: object, day: str, sales: object) -> str:
    fields = {
        columns.CUSTOMERS: 3,
        columns.OPEN: 1,
        columns.PROMO: 1,
        columns.STATE_HOLIDAY: "0",
        columns.SCHOOL_HOLIDAY: 0,
    }
    return json.dumps(
        {
            "schema_version": 1,
            columns.STORE_ID: store,
            columns.SALES_DATE: day,
            columns.SALES: sales,
        }
        | fields
    )


def test_a_batch_upserts_the_latest_values_and_dead_letters_the_rest_once(
    engine: Engine, rossmann_slice: Path
) -> None:
    with engine.begin() as connection:
        store_records.upsert_stores(connection, loading.read_dataset(rossmann_slice).stores)
    batch = received(
        [
            event(1, "2015-07-01", 10.0),
            event(1, "2015-07-01", 12.5),  # a correction: the later offset wins
            event(2, "2015-07-01", "-3"),
            event(999, "2015-07-01", 1.0),
            "{broken",
            event(3, "2015-07-01", "7"),  # numbers as JSON text pass like CSV cells
        ]
    )

    first = ingest_batch(engine, batch, batch_id=0, produced_at="produced_at")
    again = ingest_batch(engine, batch, batch_id=0, produced_at="produced_at")

    assert (first.received, first.upserted, first.dead_lettered) == (6, 2, 3)
    assert (again.upserted, again.dead_lettered) == (2, 3)
    assert len(first.freshness_seconds) == 6
    with engine.connect() as connection:
        stored = sales_records.read_sales(connection)
        letters = dead_letter_records.count_dead_letters(connection)
    assert stored.set_index(columns.STORE_ID)[columns.SALES].to_dict() == {1: 12.5, 3: 7.0}
    assert letters == 3


def test_a_batch_records_where_to_resume_in_its_own_transaction(
    engine: Engine, rossmann_slice: Path
) -> None:
    with engine.begin() as connection:
        store_records.upsert_stores(connection, loading.read_dataset(rossmann_slice).stores)
    batch = received([event(1, "2015-07-01", 10.0), "{broken", event(2, "2015-07-01", 3.0)])
    batch[events.PARTITION] = [0, 0, 3]
    batch[events.OFFSET] = [40, 41, 7]
    with engine.connect() as connection:
        known = store_records.store_ids(connection)
    prepared = prepare_batch(batch, known, batch_id=5)

    def fail_before_commit(_batch: PreparedBatch) -> None:
        raise RuntimeError("the process dies here")

    # A batch that dies before its commit leaves neither its rows nor its offsets.
    with pytest.raises(RuntimeError):
        write_batch(engine, prepared, before_commit=fail_before_commit)
    with engine.connect() as connection:
        assert stream_offset_records.read_stream_offsets(connection, "sales.daily") == {}
        assert sales_records.read_sales(connection).empty
        assert dead_letter_records.count_dead_letters(connection) == 0

    report = write_batch(engine, prepared)

    assert (report.upserted, report.dead_lettered) == (2, 1)
    with engine.connect() as connection:
        # The offset after each partition's last record, malformed records included.
        assert stream_offset_records.read_stream_offsets(connection, "sales.daily") == {0: 42, 3: 8}
        assert stream_offset_records.read_stream_offsets(connection, "other.topic") == {}
    later = received([event(1, "2015-07-02", 11.0)])
    later[events.OFFSET] = [42]
    write_batch(engine, prepare_batch(later, known, batch_id=6))
    with engine.connect() as connection:
        assert stream_offset_records.read_stream_offsets(connection, "sales.daily") == {0: 43, 3: 8}


def test_a_batch_scores_the_forecasts_issued_for_its_days_after_committing(
    engine: Engine, rossmann_slice: Path
) -> None:
    loading.load_folder(engine, rossmann_slice)
    day = pd.Timestamp("2015-06-15")
    forecast = pd.DataFrame(
        {
            columns.STORE_ID: [1, 2],
            columns.PRODUCT_ID: columns.DEFAULT_PRODUCT,
            columns.SALES_DATE: day,
        }
        | {name: 100.0 for name in columns.FORECAST_VALUES}
    )
    with engine.begin() as connection:
        records.record_issued(connection, forecast, "7", day.date(), "pipeline")

    ingest_batch(engine, received([event(1, "2015-06-15", 80.0)]), 0, "produced_at")

    with engine.connect() as connection:
        scores = records.read_scores(connection, day.date(), day.date())
    assert scores[[columns.STORE_ID, records.MODEL_VERSION, records.ACTUAL]].values.tolist() == [
        [1, "7", 80.0]
    ]
