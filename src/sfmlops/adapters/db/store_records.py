"""Stores and their series: upserts and reads of the `stores` table (and the series `sales` holds per store).

Every function takes an open `Connection`, so the caller decides the transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Connection, func, select

from sfmlops.adapters.db.rows import _as_date, _insert, _records
from sfmlops.adapters.db.tables import (
    sales,
    stores,
)
from sfmlops.core import columns


def upsert_stores(connection: Connection, frame: pd.DataFrame) -> int:
    """Insert or update store metadata (columns `columns.STORE_COLUMNS`); returns rows written."""
    if frame.empty:
        return 0
    rows = _records(frame[list(columns.STORE_COLUMNS)])
    statement = _insert(connection, stores)
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[stores.c.store_id],
        set_={name: excluded[name] for name in columns.STORE_COLUMNS if name != columns.STORE_ID}
        | {"updated_at": func.now()},
    )
    connection.execute(statement, rows)
    return len(rows)


def store_ids(connection: Connection) -> set[int]:
    """The ids of every store in the metadata."""
    return set(connection.scalars(select(stores.c.store_id)).all())


def list_stores(connection: Connection) -> pd.DataFrame:
    """Store metadata, one row per store, ordered by id."""
    result = connection.execute(
        select(*[stores.c[name] for name in columns.STORE_COLUMNS]).order_by(stores.c.store_id)
    )
    return pd.DataFrame(result.fetchall(), columns=list(columns.STORE_COLUMNS))


def get_store(connection: Connection, store_id: int) -> dict[str, Any] | None:
    """One store's metadata, or None when the store does not exist."""
    row = (
        connection.execute(
            select(*[stores.c[name] for name in columns.STORE_COLUMNS]).where(
                stores.c.store_id == store_id
            )
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row is not None else None


@dataclass(frozen=True)
class SeriesSpan:
    """One series of a store and the dates its sales cover."""

    product_id: str
    first_date: dt.date
    last_date: dt.date
    rows: int


def store_series(connection: Connection, store_id: int) -> list[SeriesSpan]:
    """The series (products) a store has sales for, with their date ranges."""
    result = connection.execute(
        select(
            sales.c.product_id,
            func.min(sales.c.sales_date),
            func.max(sales.c.sales_date),
            func.count(),
        )
        .where(sales.c.store_id == store_id)
        .group_by(sales.c.product_id)
        .order_by(sales.c.product_id)
    )
    return [
        SeriesSpan(
            product_id=product,
            first_date=_as_date(first) or dt.date.min,
            last_date=_as_date(last) or dt.date.min,
            rows=rows,
        )
        for product, first, last, rows in result
    ]


def has_series(connection: Connection, store_id: int, product_id: str) -> bool:
    """Whether the store has any sales of the product (a primary-key prefix lookup)."""
    query = (
        select(sales.c.sales_date)
        .where(sales.c.store_id == store_id, sales.c.product_id == product_id)
        .limit(1)
    )
    return connection.execute(query).first() is not None


def series_keys(connection: Connection) -> set[tuple[int, str]]:
    """Every (store_id, product_id) series that has sales."""
    query = select(sales.c.store_id, sales.c.product_id).distinct()
    return {(int(store_id), str(product)) for store_id, product in connection.execute(query)}
