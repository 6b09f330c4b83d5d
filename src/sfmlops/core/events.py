"""Sales events: the JSON contract between producers and the stream job (pure).

One event is one sales record of one (store, product, day), JSON-encoded:

    {"schema_version": 1, "store_id": 1, "product_id": "total", "sales_date": "2015-06-13",
     "sales": 4256, "customers": 502, "open": 1, "promo": 0, "state_holiday": "0",
     "school_holiday": 0}

The Kafka key is the store id, so every event of a store lands on one partition, in order:
a later offset is a later (possibly corrected) value of the same record. Decoding applies no
sales rules itself; it turns payloads into raw records, every field as the JSON text it was
sent as (None when absent or null), that `core.validation` checks with the same rules as file
loading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from sfmlops.core import columns

SCHEMA_VERSION: Final = 1
SCHEMA_VERSION_FIELD: Final = "schema_version"
EVENT_FIELDS: Final = (SCHEMA_VERSION_FIELD, *columns.SALES_COLUMNS)
"""Every field of an event, in the order they are written."""

# Columns of a batch of received records, as the stream job hands them over.
PAYLOAD: Final = "payload"  # the record value as text, exactly as received (invalid UTF-8 replaced)
TOPIC: Final = "topic"
PARTITION: Final = "partition"
OFFSET: Final = "offset"
RECORD_POSITION: Final = (TOPIC, PARTITION, OFFSET)

NOT_AN_OBJECT: Final = "payload: not a JSON object"
# The JSON type each field has in an event as producers write it. Payloads that all match
# are parsed in bulk by Arrow; any other payload (a number sent as text, a fraction where a
# count belongs, broken JSON...) is parsed on its own, keeping the literal text of numbers.
# Both give validation the same text to judge: `sales` 4256.0 arrives as "4256" from one and
# "4256.0" from the other, the same number.
_EVENT_TYPES: Final = {
    SCHEMA_VERSION_FIELD: pa.int64(),
    columns.STORE_ID: pa.int64(),
    columns.PRODUCT_ID: pa.string(),
    columns.SALES_DATE: pa.string(),
    columns.SALES: pa.float64(),
    columns.CUSTOMERS: pa.int64(),
    columns.OPEN: pa.int64(),
    columns.PROMO: pa.int64(),
    columns.STATE_HOLIDAY: pa.string(),
    columns.SCHOOL_HOLIDAY: pa.int64(),
}
_ROW: Final = "row"
_EVENT: Final = "event"
_BULK_SCHEMA: Final = pa.schema(
    [(_ROW, pa.int64()), (_EVENT, pa.struct(list(_EVENT_TYPES.items())))]
)
_BULK_ROWS: Final = 10_000  # a slice with one odd payload is parsed record by record


@dataclass(frozen=True)
class DecodedBatch:
    """Received records split by what decoding could tell.

    Attributes:
        records: Decodable records with the sales fields as received (text or None), ready for
            `validate_sales`, in delivery order (topic, partition, offset); their index is
            their position in the received batch.
        rejected: Record positions in the received batch mapped to the reason they were refused.
    """

    records: pd.DataFrame
    rejected: dict[int, str]


def encode_sales_events(sales: pd.DataFrame) -> tuple[list[bytes], list[bytes]]:
    """Canonical sales rows as Kafka keys (store ids) and JSON event values.

    Args:
        sales: Canonical, validated sales (columns `columns.SALES_COLUMNS`).

    Returns:
        Keys and values, one of each per row, in the frame's order.
    """
    if sales.empty:
        return [], []
    table = pa.Table.from_pandas(sales[list(columns.SALES_COLUMNS)], preserve_index=False)
    # Each event is assembled column-wise in Arrow's native code: ~10x faster than writing
    # JSON row by row, which made encoding cost more than sending.
    pieces: list[pa.Array | str] = [f'{{"{SCHEMA_VERSION_FIELD}":{SCHEMA_VERSION}']
    for name in columns.SALES_COLUMNS:
        pieces += [f',"{name}":', _json_values(table.column(name).combine_chunks())]
    values = pc.binary_join_element_wise(*pieces, "}", "")
    keys = pc.cast(table.column(columns.STORE_ID), pa.string())
    return keys.cast(pa.binary()).to_pylist(), values.cast(pa.binary()).to_pylist()


def _json_values(values: pa.Array) -> pa.Array:
    """Each value as JSON text: numbers as numbers, missing as null, text and dates quoted."""
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        return pc.fill_null(pc.cast(values, pa.string()), "null")
    if pa.types.is_timestamp(values.type):
        values = pc.cast(values, pa.date32())
    # Text and days repeat a lot: JSON-encode each distinct value once, exactly as json does.
    distinct = values.dictionary_encode()
    texts = [
        "null" if value is None else json.dumps(str(value))
        for value in distinct.dictionary.to_pylist()
    ]
    return pc.fill_null(pa.array(texts, pa.string()).take(distinct.indices), "null")


def decode_sales_events(received: pd.DataFrame) -> DecodedBatch:
    """Parse received payloads and sort the records into decodable ones and refused ones.

    Args:
        received: One row per Kafka record with `PAYLOAD` (the value as text) and the position
            columns (`RECORD_POSITION`); other columns are ignored.

    Returns:
        The decodable records, sorted into delivery order, and the reasons for the others.
    """
    received = received.reset_index(drop=True)
    ordered = received.sort_values(list(RECORD_POSITION), kind="stable")
    payloads = _arrow_text(ordered[PAYLOAD])
    fields, malformed = parse_events(payloads)
    parsed = pd.DataFrame(
        {name: pd.Series(pd.arrays.ArrowStringArray(values)) for name, values in fields.items()}
    ).set_index(ordered.index)
    rejected: dict[int, str] = {
        int(position): NOT_AN_OBJECT for position in ordered.index[malformed]
    }
    # A JSON escape can smuggle a NUL character into a text field, which no PostgreSQL text
    # column can store: refuse it here rather than fail the whole batch's write.
    for name in columns.SALES_COLUMNS:
        has_nul = parsed[name].str.contains("\x00", regex=False).fillna(False).astype(bool)
        for position in parsed.index[has_nul & ~malformed]:
            rejected.setdefault(int(position), f"{name}: contains a NUL character")
    version = parsed[SCHEMA_VERSION_FIELD]
    refused = parsed.index.isin(list(rejected))
    unsupported = ~refused & (version.fillna("") != str(SCHEMA_VERSION)).to_numpy(dtype=bool)
    for position, found in zip(
        parsed.index[unsupported], version[unsupported].tolist(), strict=True
    ):
        shown = "missing" if found is None or found is pd.NA else f"{found!r}"
        rejected[int(position)] = (
            f"{SCHEMA_VERSION_FIELD}: {shown}, this consumer reads version {SCHEMA_VERSION}"
        )
    records = parsed.loc[~parsed.index.isin(list(rejected)), list(columns.SALES_COLUMNS)]
    return DecodedBatch(records=records, rejected=rejected)


def parse_events(payloads: pa.StringArray) -> tuple[dict[str, pa.StringArray], np.ndarray]:
    """Each payload's event fields as JSON text, and which payloads are not JSON objects.

    Args:
        payloads: Record values as text.

    Returns:
        Per field of `EVENT_FIELDS`, one text value per payload (null when the payload lacks
        the field, holds JSON null, or is not an object); and a boolean mask of the payloads
        that are not a JSON object.
    """
    parts: list[dict[str, pa.StringArray]] = []
    malformed: list[np.ndarray] = []
    for start in range(0, len(payloads), _BULK_ROWS):
        part = payloads.slice(start, _BULK_ROWS)
        bulk = _parse_in_bulk(part)
        if bulk is not None:
            parts.append(bulk)
            malformed.append(np.zeros(len(part), dtype=bool))
        else:
            fields, bad = _parse_one_by_one(part)
            parts.append(fields)
            malformed.append(bad)
    fields = {
        name: pa.concat_arrays([part[name] for part in parts])
        if parts
        else pa.array([], pa.string())
        for name in EVENT_FIELDS
    }
    return fields, (np.concatenate(malformed) if malformed else np.zeros(0, dtype=bool))


def _parse_in_bulk(payloads: pa.StringArray) -> dict[str, pa.StringArray] | None:
    """Arrow's multi-threaded JSON reader on payloads of the usual shape; None when any is not.

    Each payload is wrapped as `{"row": i, "event": <payload>}`, one per line: a payload that
    is not exactly one JSON object (two objects, a fragment, a line break, empty) breaks the
    wrapper or the row numbers, and the slice goes to `_parse_one_by_one` instead.
    """
    count = len(payloads)
    numbers = pa.array(np.arange(count, dtype=np.int64))
    lines = pc.binary_join_element_wise(
        f'{{"{_ROW}":', numbers.cast(pa.string()), f',"{_EVENT}":', payloads, "}\n", ""
    )
    document = pc.binary_join(
        pa.ListArray.from_arrays(pa.array([0, count], pa.int32()), lines), ""
    )[0].as_buffer()
    try:
        table = pa_json.read_json(
            pa.BufferReader(document),
            parse_options=pa_json.ParseOptions(
                explicit_schema=_BULK_SCHEMA, unexpected_field_behavior="ignore"
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != count or not table.column(_ROW).equals(pa.chunked_array([numbers])):
        return None
    event = table.column(_EVENT).combine_chunks()
    if event.null_count:
        return None  # an event that is JSON null
    return {name: _plain(pc.cast(event.field(name), pa.string())) for name in EVENT_FIELDS}


def _parse_one_by_one(payloads: pa.StringArray) -> tuple[dict[str, pa.StringArray], np.ndarray]:
    """Python's JSON parser, payload by payload, numbers kept as their literal text."""
    columns: dict[str, list[str | None]] = {name: [] for name in EVENT_FIELDS}
    malformed = np.zeros(len(payloads), dtype=bool)
    for row, payload in enumerate(payloads.to_pylist()):
        try:
            event = json.loads(payload or "", parse_int=str, parse_float=str, parse_constant=str)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            malformed[row] = True
            event = {}
        if any(isinstance(value, dict | list) for value in event.values()):
            # Nested values as JSON text need their numbers as numbers: parse them plainly.
            plain = json.loads(payload)
            event = {
                name: json.dumps(plain[name]) if isinstance(value, dict | list) else value
                for name, value in event.items()
            }
        for name in EVENT_FIELDS:
            columns[name].append(_field_text(event.get(name)))
    return {name: pa.array(values, pa.string()) for name, values in columns.items()}, malformed


def _field_text(value: Any) -> str | None:
    """A parsed field as JSON text (numbers and nested values already are)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return None if value is None else str(value)


def _plain(values: pa.Array | pa.ChunkedArray) -> pa.StringArray:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _arrow_text(values: pd.Series) -> pa.StringArray:
    """A text column as one Arrow string array (no copy when it is Arrow-backed already)."""
    array = pa.array(values.astype("string[pyarrow]").array)
    return _plain(array.cast(pa.string()))
