"""The audit log: who wrote what, and when."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Connection, func, insert, select

from sfmlops.adapters.db.tables import audit_events


def record(
    connection: Connection,
    actor: str,
    action: str,
    detail: dict[str, Any] | None = None,
    client: str | None = None,
    occurred_at: dt.datetime | None = None,
) -> None:
    """Append one event (at `occurred_at`, default now) in the caller's transaction."""
    connection.execute(
        insert(audit_events).values(
            occurred_at=occurred_at or dt.datetime.now(dt.UTC),
            actor=actor[:256],
            action=action,
            client=client[:128] if client else None,
            detail=json.dumps(detail, default=str) if detail is not None else None,
        )
    )


def count_since(connection: Connection, actor: str, action: str, since: dt.datetime) -> int:
    """How many `action` events `actor` caused at or after `since`."""
    query = select(func.count()).where(
        audit_events.c.actor == actor,
        audit_events.c.action == action,
        audit_events.c.occurred_at >= since,
    )
    return int(connection.execute(query).scalar_one())


def oldest_since(
    connection: Connection, actor: str, action: str, since: dt.datetime
) -> dt.datetime | None:
    """When the oldest `action` event of `actor` at or after `since` happened."""
    query = select(func.min(audit_events.c.occurred_at)).where(
        audit_events.c.actor == actor,
        audit_events.c.action == action,
        audit_events.c.occurred_at >= since,
    )
    oldest: dt.datetime | None = connection.execute(query).scalar_one()
    if oldest is not None and oldest.tzinfo is None:  # SQLite hands back naive UTC
        oldest = oldest.replace(tzinfo=dt.UTC)
    return oldest


def list_events(connection: Connection, limit: int = 100) -> list[dict[str, Any]]:
    """The newest events first."""
    query = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
    events = []
    for row in connection.execute(query).mappings():
        event = dict(row)
        event["detail"] = json.loads(event["detail"]) if event["detail"] else None
        events.append(event)
    return events
