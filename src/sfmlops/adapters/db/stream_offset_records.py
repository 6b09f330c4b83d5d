"""Stream offsets: per topic and partition, the Kafka offset after the last record applied."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from sfmlops.adapters.db.rows import _insert
from sfmlops.adapters.db.tables import (
    stream_offsets,
)


def read_stream_offsets(connection: Connection, topic: str) -> dict[int, int]:
    """Per partition of `topic`, the offset the stream job resumes from (absent: never read)."""
    query = select(stream_offsets.c.kafka_partition, stream_offsets.c.next_offset).where(
        stream_offsets.c.kafka_topic == topic
    )
    return {int(partition): int(offset) for partition, offset in connection.execute(query)}


def write_stream_offsets(connection: Connection, topic: str, next_offsets: dict[int, int]) -> None:
    """Record where the stream job resumes, inside the transaction that applied the records."""
    if not next_offsets:
        return
    statement = _insert(connection, stream_offsets)
    statement = statement.on_conflict_do_update(
        index_elements=[stream_offsets.c.kafka_topic, stream_offsets.c.kafka_partition],
        set_={"next_offset": statement.excluded.next_offset, "updated_at": func.now()},
    )
    connection.execute(
        statement,
        [
            {"kafka_topic": topic, "kafka_partition": partition, "next_offset": offset}
            for partition, offset in sorted(next_offsets.items())
        ],
    )
