"""The system's notion of "today" and its freshness figures."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection

from sfmlops.adapters.db import dead_letter_records, sales_records, store_records
from sfmlops.settings import Settings

FRESHNESS_WINDOW = dt.timedelta(days=1)


def as_of_date(settings: Settings, connection: Connection) -> dt.date | None:
    """The date treated as "today - 1": SFMLOPS_AS_OF, else the latest sales date stored.

    So the bundled 2015 data behaves like live data: "today" is the day after it ends.
    """
    return settings.as_of or sales_records.latest_sales_date(connection)


@dataclass(frozen=True)
class SystemStatus:
    as_of: dt.date | None
    latest_sales_date: dt.date | None
    sales_rows: int
    stores: int
    sales_ingested_last_day: int
    dead_letters_last_day: int


def system_status(
    settings: Settings, connection: Connection, now: dt.datetime | None = None
) -> SystemStatus:
    """Data freshness: what the dashboard's overview and the daily DAG's checks read."""
    since = (now or dt.datetime.now(dt.UTC)) - FRESHNESS_WINDOW
    rows, latest = sales_records.sales_rows_and_latest_date(connection)
    return SystemStatus(
        as_of=settings.as_of or latest,
        latest_sales_date=latest,
        sales_rows=rows,
        stores=len(store_records.store_ids(connection)),
        sales_ingested_last_day=sales_records.count_sales_ingested_since(connection, since),
        dead_letters_last_day=dead_letter_records.count_dead_letters(connection, since),
    )
