"""Sales events: the JSON contract between producers and the stream job (pure).

One event is one sales record of one (store, product, day), JSON-encoded:

    {"schema_version": 1, "store_id": 1, "product_id": "total", "sales_date": "2015-06-13",
     "sales": 4256.0, "customers": 502, "open": 1, "promo": 0, "state_holiday": "0",
     "school_holiday": 0}

The Kafka key is the store id, so every event of a store lands on one partition, in order:
a later offset is a later (possibly corrected) value of the same record. Decoding applies no
sales rules itself; it turns payloads into raw records that `core.validation` checks with the
same rules as file loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pandas as pd

from sfmlops.core import columns as c

SCHEMA_VERSION: Final = 1
SCHEMA_VERSION_FIELD: Final = "schema_version"
EVENT_FIELDS: Final = (SCHEMA_VERSION_FIELD, *c.SALES_COLUMNS)
"""Every field of an event, in the order they are written."""

# Columns of a batch of received records, as the stream job hands them over.
PAYLOAD: Final = "payload"  # the record value as text, exactly as received (invalid UTF-8 replaced)
MALFORMED: Final = "malformed"  # True when the payload is not a JSON object
TOPIC: Final = "topic"
PARTITION: Final = "partition"
OFFSET: Final = "offset"
RECORD_POSITION: Final = (TOPIC, PARTITION, OFFSET)


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
    events = sales[list(c.SALES_COLUMNS)].copy()
    events[c.SALES_DATE] = pd.to_datetime(events[c.SALES_DATE]).dt.strftime("%Y-%m-%d")
    events.insert(0, SCHEMA_VERSION_FIELD, SCHEMA_VERSION)
    # pandas writes JSON lines in native code, ~20x faster than json.dumps per row; missing
    # customers become null.
    lines = events.to_json(orient="records", lines=True, double_precision=15).splitlines()
    values = [line.encode() for line in lines]
    keys = [str(store).encode() for store in events[c.STORE_ID].tolist()]
    return keys, values


def decode_sales_events(received: pd.DataFrame) -> DecodedBatch:
    """Sort received records into decodable ones and refused ones.

    Args:
        received: One row per Kafka record with `PAYLOAD`, `MALFORMED`, the position columns
            (`RECORD_POSITION`) and one text column per event field (`EVENT_FIELDS`), None
            where the JSON object lacks the field.

    Returns:
        The decodable records, sorted into delivery order, and the reasons for the others.
    """
    received = received.reset_index(drop=True)
    ordered = received.sort_values(list(RECORD_POSITION), kind="stable")
    rejected: dict[int, str] = {}
    version = ordered[SCHEMA_VERSION_FIELD]
    malformed = ordered[MALFORMED].astype(bool)
    for position in ordered.index[malformed]:
        rejected[int(position)] = "payload: not a JSON object"
    # A JSON escape can smuggle a NUL character into a text field, which no PostgreSQL text
    # column can store: refuse it here rather than fail the whole batch's write.
    for name in c.SALES_COLUMNS:
        text = ordered[name].astype("string[pyarrow]")
        has_nul = text.str.contains("\x00", regex=False).fillna(False).astype(bool)
        for position in ordered.index[has_nul & ~malformed]:
            rejected.setdefault(int(position), f"{name}: contains a NUL character")
    refused = ordered.index.isin(list(rejected))
    unsupported = ~refused & (version.fillna("") != str(SCHEMA_VERSION))
    for position, found in zip(
        ordered.index[unsupported], version[unsupported].tolist(), strict=True
    ):
        shown = "missing" if found is None else f"{found!r}"
        rejected[int(position)] = (
            f"{SCHEMA_VERSION_FIELD}: {shown}, this consumer reads version {SCHEMA_VERSION}"
        )
    records = ordered.loc[~ordered.index.isin(list(rejected)), list(c.SALES_COLUMNS)]
    return DecodedBatch(records=records, rejected=rejected)
