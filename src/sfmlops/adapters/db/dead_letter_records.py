"""Dead letters: records that could not be ingested, kept with the reason in `ingest_dead_letters`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from sfmlops.adapters.db.rows import _insert
from sfmlops.adapters.db.tables import (
    ingest_dead_letters,
)


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be ingested, kept with the reason."""

    source: str
    payload: str
    reason: str
    kafka_topic: str | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None


def add_dead_letters(connection: Connection, letters: Iterable[DeadLetter]) -> int:
    """Keep rejected records with their reasons; returns how many were handed over.

    A Kafka record (topic, partition, offset) already kept is skipped, so a re-delivered
    micro-batch adds no second copy.
    """
    rows = [letter.__dict__ for letter in letters]
    if rows:
        statement = _insert(connection, ingest_dead_letters).on_conflict_do_nothing(
            index_elements=[
                ingest_dead_letters.c.kafka_topic,
                ingest_dead_letters.c.kafka_partition,
                ingest_dead_letters.c.kafka_offset,
            ]
        )
        connection.execute(statement, rows)
    return len(rows)


def count_dead_letters(connection: Connection, since: dt.datetime | None = None) -> int:
    """Dead letters received since `since` (all when None)."""
    query = select(func.count()).select_from(ingest_dead_letters)
    if since is not None:
        query = query.where(ingest_dead_letters.c.received_at >= since)
    return int(connection.execute(query).scalar_one())


def list_dead_letters(
    connection: Connection,
    limit: int = 50,
    source: str | None = None,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """The newest dead letters first: id, source, payload, reason, Kafka position, received_at.

    Args:
        connection: The sales database.
        limit: Most letters returned.
        source: Only letters from this source (e.g. "api", "kafka").
        before_id: Only letters older than this id (the next page after a listing).
    """
    query = select(ingest_dead_letters).order_by(ingest_dead_letters.c.id.desc()).limit(limit)
    if source is not None:
        query = query.where(ingest_dead_letters.c.source == source)
    if before_id is not None:
        query = query.where(ingest_dead_letters.c.id < before_id)
    return [dict(row) for row in connection.execute(query).mappings()]


def dead_letter_payload(record: dict[str, Any]) -> str:
    """A record as JSON text for the dead-letter table (dates and numpy values included)."""
    return json.dumps(record, default=str, sort_keys=True)
