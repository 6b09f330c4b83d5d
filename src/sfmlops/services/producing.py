"""Producing sales events to Kafka from a file or the database.

Records are validated before they are sent (a file with a bad row is refused whole, naming the
line), except for store existence, which only the database knows: the stream job checks that
and dead-letters records of unknown stores.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from sfmlops.adapters import files, kafka
from sfmlops.adapters.db import sales_records
from sfmlops.adapters.kafka_security import PLAINTEXT, KafkaSecurity
from sfmlops.core import columns, events
from sfmlops.services import loading


def sales_from_file(path: Path) -> pd.DataFrame:
    """Validated sales rows of one CSV file (Rossmann headers or domain names).

    Raises:
        loading.DataFileError: When a row fails validation (nothing is sent then).
        files.DataFileNotFoundError: When the file does not exist.
    """
    raw = files.read_csv_as_text(path, columns.ROSSMANN_SALES_COLUMNS)
    stores = pd.to_numeric(raw.get(columns.STORE_ID, pd.Series(dtype=str)), errors="coerce")
    in_file = {int(store) for store in stores.dropna() if float(store).is_integer()}
    return loading.read_sales_file(path, in_file)


def sales_from_database(
    engine: Engine, start: dt.date | None = None, end: dt.date | None = None
) -> pd.DataFrame:
    """Stored sales between `start` and `end` (inclusive; None: unbounded)."""
    with engine.connect() as connection:
        return sales_records.read_sales(connection, start=start, end=end)


def latest_sales_from_database(
    engine: Engine, start: dt.date | None = None, end: dt.date | None = None
) -> pd.DataFrame:
    """Each stored series' most recent record between `start` and `end`: what a live day needs."""
    with engine.connect() as connection:
        return sales_records.read_latest_sales(connection, start=start, end=end)


def between(sales: pd.DataFrame, start: dt.date | None, end: dt.date | None) -> pd.DataFrame:
    """The rows of `sales` dated from `start` to `end` inclusive (None: unbounded)."""
    keep = pd.Series(True, index=sales.index)
    if start is not None:
        keep &= sales[columns.SALES_DATE] >= pd.Timestamp(start)
    if end is not None:
        keep &= sales[columns.SALES_DATE] <= pd.Timestamp(end)
    return sales[keep]


def in_event_order(sales: pd.DataFrame) -> pd.DataFrame:
    """Sales sorted by day, then store: the order a day's records arrive in."""
    return sales.sort_values(
        [columns.SALES_DATE, columns.STORE_ID, columns.PRODUCT_ID], kind="stable"
    )


def live_replay(sales: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Each series' most recent record, re-dated to the day after `as_of`.

    This mimics a live feed of "yesterday's" sales from historic data: what a store sold on
    its latest recorded day arrives as the sales of the next, not yet recorded, day.
    """
    if sales.empty:
        return sales
    latest = sales.sort_values(columns.SALES_DATE, kind="stable").drop_duplicates(
        list(columns.SERIES_KEY), keep="last"
    )
    next_day = pd.Timestamp(as_of + dt.timedelta(days=1))
    return latest.assign(**{columns.SALES_DATE: next_day}).sort_values(list(columns.SERIES_KEY))


def produce_sales(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    sales: pd.DataFrame,
    *,
    rate: float | None = None,
    on_ack: Callable[[int], None] | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> int:
    """Send one event per sales row, in the frame's order, and wait for every acknowledgement.

    Args:
        bootstrap_servers: Kafka brokers.
        topic: Created with `partitions` partitions when missing.
        partitions: See `topic`.
        sales: Canonical sales rows.
        rate: Events per second; None sends as fast as the broker takes them.
        on_ack: Called with the number of events just acknowledged, for progress.
        security: The producer's security protocol and SCRAM user.

    Returns:
        The number of events Kafka acknowledged.

    Raises:
        kafka.KafkaDeliveryError: When an event was not acknowledged.
    """
    keys, values = events.encode_sales_events(sales)
    kafka.ensure_topic(bootstrap_servers, topic, partitions, security=security)
    producer = kafka.make_producer(bootstrap_servers, security=security)
    return kafka.send(producer, topic, keys, values, rate=rate, on_ack=on_ack)
