"""Ingesting sales records one batch at a time: keep the valid, dead-letter the rest.

The API's POST /v1/sales uses this; file loading (all or nothing) lives in `loading`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from sfmlops.adapters.db import dead_letter_records, sales_records, store_records
from sfmlops.core.validation import MissingColumnsError, SalesLimits, validate_sales
from sfmlops.services import realized_accuracy
from sfmlops.settings import Settings


@dataclass(frozen=True)
class RejectedRecord:
    """A record of the batch that was not stored, by its position in the batch."""

    index: int
    reason: str


@dataclass(frozen=True)
class IngestResult:
    """What happened to each record of a batch."""

    accepted: int
    rejected: list[RejectedRecord]


def sales_limits(settings: Settings) -> SalesLimits:
    """The configured plausibility bounds, with today's date (call once per batch)."""
    return SalesLimits.for_today(
        margin_days=settings.sales_date_margin_days,
        max_sales=settings.max_daily_sales,
        max_customers=settings.max_daily_customers,
    )


def ingest_records(
    engine: Engine,
    records: Sequence[dict[str, Any]],
    source: str,
    limits: SalesLimits | None = None,
) -> IngestResult:
    """Validate a batch of sales records, upsert the valid ones and dead-letter the others.

    Both happen in one transaction: either every valid record is stored and every invalid one
    is dead-lettered with its reason, or (on a database error) nothing is. Once it has
    committed, the forecasts issued for the records' days are scored.

    Args:
        engine: The sales database.
        records: Records with domain field names (see `columns.SALES_COLUMNS`; `day_of_week`
            is checked when present, `product_id` defaults to the store total).
        source: Where the batch came from, kept with dead letters (e.g. "api").
        limits: Plausible dates and amounts (default `SalesLimits()`).
    """
    if not records:
        return IngestResult(accepted=0, rejected=[])
    raw = pd.DataFrame.from_records(list(records))
    with engine.begin() as connection:
        known = store_records.store_ids(connection)
        try:
            result = validate_sales(raw, known, limits=limits)
        except MissingColumnsError as error:
            # Every record lacks the same fields: each is rejected for it, none is lost.
            reasons = {index: str(error) for index in range(len(records))}
            valid = raw.iloc[0:0]
        else:
            reasons = result.reasons_by_row()
            valid = result.valid
        sales_records.upsert_sales(connection, valid)
        dead_letter_records.add_dead_letters(
            connection,
            [
                dead_letter_records.DeadLetter(
                    source=source,
                    payload=dead_letter_records.dead_letter_payload(dict(records[index])),
                    reason=reason,
                )
                for index, reason in reasons.items()
            ],
        )
    realized_accuracy.score_actuals(engine, realized_accuracy.sales_days(valid))
    return IngestResult(
        accepted=len(records) - len(reasons),
        rejected=[
            RejectedRecord(index=index, reason=reason) for index, reason in sorted(reasons.items())
        ],
    )
