"""The sales event contract: encoding canonical rows, sorting received records."""

from __future__ import annotations

import json

import pandas as pd

from sfmlops.core import columns as c
from sfmlops.core import events


def canonical(rows: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame.astype({c.CUSTOMERS: "Int64"}).assign(
        **{c.SALES_DATE: pd.to_datetime(frame[c.SALES_DATE])}
    )


def record(store: int, day: str, sales: float, customers: int | None = 5) -> dict[str, object]:
    return {
        c.STORE_ID: store, c.PRODUCT_ID: "total", c.SALES_DATE: day, c.SALES: sales,
        c.CUSTOMERS: customers, c.OPEN: 1, c.PROMO: 0, c.STATE_HOLIDAY: "a", c.SCHOOL_HOLIDAY: 1,
    }  # fmt: skip


def received(payloads: list[dict[str, object] | str], partition: int = 0) -> pd.DataFrame:
    """Records as the stream job hands them over: every field as JSON text, None when absent."""
    rows = []
    for offset, payload in enumerate(payloads):
        parsed = (
            json.loads(payload) if isinstance(payload, str) and payload.startswith("{") else payload
        )
        is_object = isinstance(parsed, dict)
        fields = {
            name: (None if not is_object or parsed.get(name) is None else str(parsed[name]))
            for name in events.EVENT_FIELDS
        }
        text = payload if isinstance(payload, str) else json.dumps(payload)
        rows.append(
            fields
            | {
                events.PAYLOAD: text,
                events.MALFORMED: not is_object,
                events.TOPIC: "sales.daily",
                events.PARTITION: partition,
                events.OFFSET: offset,
            }
        )
    return pd.DataFrame(rows)


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


def test_decoding_refuses_what_is_not_a_current_event_and_keeps_delivery_order() -> None:
    good = {"schema_version": 1, **record(1, "2015-06-13", 1.0)}
    batch = pd.concat(
        [
            received([good, "not json", {**good, "schema_version": 2}], partition=1),
            received([{**good, c.SALES: 2.0}, {**good, c.PRODUCT_ID: "a\x00b"}]),
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
    assert decoded.records[c.SALES].tolist() == ["2.0", "1.0"]
    assert list(decoded.records.columns) == list(c.SALES_COLUMNS)


def test_a_missing_schema_version_is_named() -> None:
    decoded = events.decode_sales_events(received([record(1, "2015-06-13", 1.0)]))

    assert decoded.rejected == {0: "schema_version: missing, this consumer reads version 1"}
    assert decoded.records.empty
