"""The sales event contract: encoding canonical rows, sorting received records."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa

from sfmlops.core import columns, events


def canonical(rows: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame.astype({columns.CUSTOMERS: "Int64"}).assign(
        **{columns.SALES_DATE: pd.to_datetime(frame[columns.SALES_DATE])}
    )


def record(store: int, day: str, sales: float, customers: int | None = 5) -> dict[str, object]:
    return {
        columns.STORE_ID: store, columns.PRODUCT_ID: "total", columns.SALES_DATE: day, columns.SALES: sales,
        columns.CUSTOMERS: customers, columns.OPEN: 1, columns.PROMO: 0, columns.STATE_HOLIDAY: "a", columns.SCHOOL_HOLIDAY: 1,
    }  # fmt: skip


def received(payloads: list[dict[str, object] | str], partition: int = 0) -> pd.DataFrame:
    """Records as the stream job hands them over: the value as text and its Kafka position."""
    return pd.DataFrame(
        {
            events.PAYLOAD: [p if isinstance(p, str) else json.dumps(p) for p in payloads],
            events.TOPIC: "sales.daily",
            events.PARTITION: partition,
            events.OFFSET: range(len(payloads)),
        }
    )


def test_events_are_keyed_by_store_and_carry_the_schema_version() -> None:
    keys, values = events.encode_sales_events(
        canonical([record(7, "2015-06-13", 4256.5), record(12, "2015-06-12", 0.0, None)])
    )

    assert keys == [b"7", b"12"]
    first, second = (json.loads(value) for value in values)
    assert first == {
        "schema_version": 1, "store_id": 7, "product_id": "total", "sales_date": "2015-06-13",
        "sales": 4256.5, "customers": 5, "open": 1, "promo": 0, "state_holiday": "a",
        "school_holiday": 1,
    }  # fmt: skip
    assert second["customers"] is None
    assert list(first) == list(events.EVENT_FIELDS)


def test_text_fields_that_need_escaping_encode_as_valid_json() -> None:
    odd = record(3, "2015-06-11", 17.25) | {columns.PRODUCT_ID: 'shelf "A"\\1 \u00e9\n'}
    keys, values = events.encode_sales_events(canonical([odd, record(3, "2015-06-12", 1.0)]))

    decoded = [json.loads(value) for value in values]
    assert decoded[0][columns.PRODUCT_ID] == 'shelf "A"\\1 \u00e9\n'
    assert decoded[0][columns.SALES] == 17.25
    assert decoded[1][columns.PRODUCT_ID] == "total"
    assert keys == [b"3", b"3"]


def test_decoding_refuses_what_is_not_a_current_event_and_keeps_delivery_order() -> None:
    good = {"schema_version": 1, **record(1, "2015-06-13", 1.0)}
    batch = pd.concat(
        [
            received([good, "not json", {**good, "schema_version": 2}], partition=1),
            received([{**good, columns.SALES: 2.0}, {**good, columns.PRODUCT_ID: "a\x00b"}]),
        ],
        ignore_index=True,
    )

    decoded = events.decode_sales_events(batch)

    assert decoded.rejected == {
        1: "payload: not a JSON object",
        2: "schema_version: '2', this consumer reads version 1",
        4: "product_id: contains a NUL character",
    }
    # Partition 0 before partition 1, each by offset: the order "latest wins" relies on.
    assert decoded.records.index.tolist() == [3, 0]
    assert decoded.records[columns.SALES].tolist() == ["2.0", "1.0"]
    assert list(decoded.records.columns) == list(columns.SALES_COLUMNS)


def test_a_missing_schema_version_is_named() -> None:
    decoded = events.decode_sales_events(received([record(1, "2015-06-13", 1.0)]))

    assert decoded.rejected == {0: "schema_version: missing, this consumer reads version 1"}
    assert decoded.records.empty


def test_odd_payloads_are_refused_or_kept_as_their_json_text() -> None:
    good = {"schema_version": 1, **record(1, "2015-06-13", 1.0)}
    odd = [
        json.dumps(good) + json.dumps(good),  # two objects in one record
        "",  # a tombstone
        "[1, 2]",
        "null",
        '{"schema_version": 1, "store_id": 1} trailing',
        json.dumps(
            {**good, columns.SALES: "7", columns.OPEN: True, columns.PRODUCT_ID: {"sku": 2}}
        ),
        json.dumps({**good, columns.SALES: 1.5}).replace("1.5", "1e400"),  # beyond float64
        '{"schema_version": 1,\n "store_id": 2}',  # a line break inside the object
    ]

    fields, malformed = events.parse_events(pa.array(odd, pa.string()))

    assert malformed.tolist() == [True, True, True, True, True, False, False, False]
    assert fields[columns.SALES].to_pylist()[5:7] == ["7", "1e400"]
    assert fields[columns.OPEN][5].as_py() == "true"
    assert fields[columns.PRODUCT_ID][5].as_py() == '{"sku": 2}'
    assert fields[columns.STORE_ID].to_pylist() == [None] * 5 + ["1", "1", "2"]


def test_bulk_and_record_by_record_parsing_give_validation_the_same_records() -> None:
    rows = [record(store, "2015-06-13", sales) for store, sales in [(1, 4256.0), (2, 0.5)]]
    _, values = events.encode_sales_events(canonical(rows * 10_000))
    payloads = [value.decode() for value in values]
    # The second 10,000-record slice holds one broken payload: it is parsed record by record.
    payloads[15_000] = "{broken"

    fields, malformed = events.parse_events(pa.array(payloads, pa.string()))

    assert np.flatnonzero(malformed).tolist() == [15_000]
    bulk = [fields[name][3].as_py() for name in events.EVENT_FIELDS]
    one_by_one = [fields[name][10_003].as_py() for name in events.EVENT_FIELDS]
    # Numbers may read "4256" or "4256.0": the same number to validation.
    assert bulk == ["1", "2", "total", "2015-06-13", "0.5", "5", "1", "0", "a", "1"]
    assert one_by_one == ["1", "2", "total", "2015-06-13", "0.5", "5", "1", "0", "a", "1"]
    first = [fields[columns.SALES][0].as_py(), fields[columns.SALES][10_000].as_py()]
    assert [float(value) for value in first] == [4256.0, 4256.0]
