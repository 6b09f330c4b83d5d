"""How the dashboard words counts: "1 record", "17 records", never "17 record(s)"."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """`count` with `noun` in the right number, thousands separated (e.g. "1,115 stores")."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"
