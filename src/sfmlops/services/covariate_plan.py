"""The plan of known future covariates: validated, stored with who set it, read for forecasts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from sfmlops.adapters.db import audit, plan_records, store_records
from sfmlops.core import columns
from sfmlops.core.forecasting.plan import as_plan
from sfmlops.core.validation import validate_future


class InvalidPlanError(ValueError):
    """Plan records that failed validation; nothing was stored.

    Attributes:
        problems: One message per problem, naming the record (0-based) and the field.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the plan, nothing was stored: "
            + "; ".join(self.problems[:20])
        )


def plan_of_records(
    records: Sequence[Mapping[str, Any]], known_store_ids: Sequence[int]
) -> pd.DataFrame:
    """Validate plan records (`store_id`, `sales_date`, `open`, `promo`, `state_holiday`,
    `school_holiday`) with the rules of future covariates; returns the plan.

    Raises:
        InvalidPlanError: Naming the record and field of every problem.
    """
    raw = pd.DataFrame(list(records)).astype(str)
    missing = [
        name for name in columns.FUTURE_COLUMNS if name != columns.PRODUCT_ID and name not in raw
    ]
    if missing:
        raise InvalidPlanError([f"every record: {name} missing" for name in missing])
    validated = validate_future(raw, known_store_ids)
    if not validated.issues.empty:
        raise InvalidPlanError(
            [
                f"record {int(row)}, field {column}: {reason} (value {value!r})"
                for row, column, value, reason in validated.issues[
                    ["row", "column", "value", "reason"]
                ].itertuples(index=False)
            ]
        )
    return as_plan(validated.valid)


def known_store_ids(engine: Engine) -> list[int]:
    """The stores a plan may name: those in the store metadata."""
    with engine.connect() as connection:
        return sorted(store_records.store_ids(connection))


def store_plan(engine: Engine, plan: pd.DataFrame, updated_by: str, source: str) -> int:
    """Write plan rows (replacing a store's day already planned) and an audit event, in one
    transaction; returns the rows written."""
    with engine.begin() as connection:
        written = plan_records.upsert_plan(connection, plan, updated_by)
        audit.record(
            connection,
            updated_by,
            "plan.load",
            {
                "source": source,
                "rows": written,
                "stores": int(plan[columns.STORE_ID].nunique()),
                "first": str(pd.Timestamp(plan[columns.SALES_DATE].min()).date()),
                "last": str(pd.Timestamp(plan[columns.SALES_DATE].max()).date()),
            },
        )
    return written
