"""Dead letters: the records ingestion refused, with their reasons."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from sfmlops.adapters.db import dead_letter_records
from sfmlops.services.api import schemas
from sfmlops.services.api.deps import ReadEngineDep

router = APIRouter(prefix="/v1/dead-letters", tags=["sales"])


@router.get("", response_model=schemas.DeadLetterList, summary="Refused records, newest first")
def list_dead_letters(
    engine: ReadEngineDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    source: Annotated[str | None, Query(max_length=256, description='e.g. "api", "kafka"')] = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> schemas.DeadLetterList:
    with engine.connect() as connection:
        letters = dead_letter_records.list_dead_letters(connection, limit, source, before_id)
    return schemas.DeadLetterList(
        dead_letters=[schemas.DeadLetter.model_validate(letter) for letter in letters],
        next_before_id=letters[-1]["id"] if len(letters) == limit else None,
    )
