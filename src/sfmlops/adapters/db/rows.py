"""What the record modules share: the dialect's INSERT (ON CONFLICT on both backends) and row conversions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def _insert(connection: Connection, table: Table) -> Any:
    """The dialect's INSERT, which offers ON CONFLICT on both backends."""
    module = postgresql if connection.dialect.name == "postgresql" else sqlite
    return module.insert(table)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(key): (None if pd.isna(value) else value) for key, value in row.items()}
        for row in frame.astype(object).to_dict("records")
    ]


def _as_date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))
