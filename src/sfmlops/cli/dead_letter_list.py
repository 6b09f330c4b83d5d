"""`sfmlops dead-letters`: the records ingestion refused, with their reasons."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from sfmlops.adapters.db import dead_letter_records
from sfmlops.cli.context import console, migrated_engine_of


def list_dead_letters(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", min=1, max=10_000, help="How many to show."),
    source: str | None = typer.Option(None, "--source", help='Only this source, e.g. "api".'),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines with the payloads."),
) -> None:
    """List refused records, newest first: when, from where, why, and what was received."""
    engine = migrated_engine_of(ctx)
    with engine.connect() as connection:
        letters = dead_letter_records.list_dead_letters(connection, limit, source)
    if as_json:
        for letter in letters:
            print(json.dumps(letter, default=str))
        return
    if not letters:
        console.print("No dead letters." if source is None else f"No dead letters from {source}.")
        return
    table = Table("id", "received", "source", "reason", "record", title="Dead letters")
    for letter in letters:
        position = (
            f" ({letter['kafka_topic']}:{letter['kafka_partition']}@{letter['kafka_offset']})"
            if letter["kafka_topic"]
            else ""
        )
        table.add_row(
            str(letter["id"]),
            f"{letter['received_at']:%Y-%m-%d %H:%M:%S}",
            letter["source"] + position,
            letter["reason"],
            letter["payload"][:80],
        )
    console.print(table)
