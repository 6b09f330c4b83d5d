"""The plan: covariates a retailer knows ahead for its stores' future days.

A plan row gives one store's covariates for one day (open, promotion, state and school
holiday), as the competition's test file does. Forecasts use them where the caller gives
none; where neither does, the bundle derives a default (`bundle.complete_future`). A plan
row is per store: every product of the store shares it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pandas as pd

from sfmlops.core import columns

PLANNED_COVARIATES = (
    columns.OPEN,
    columns.PROMO,
    columns.STATE_HOLIDAY,
    columns.SCHOOL_HOLIDAY,
)
PLAN_COLUMNS = (columns.STORE_ID, columns.SALES_DATE, *PLANNED_COVARIATES)
# Where a forecast's covariate came from, in order of precedence.
FROM_CALLER = "caller"
FROM_PLAN = "plan"
FROM_DEFAULT = "default"

# store_id -> day -> covariate -> value: the plan as serving looks it up per request.
PlanByStore = Mapping[int, Mapping[dt.date, Mapping[str, Any]]]


def empty_plan() -> pd.DataFrame:
    """A plan without rows (`PLAN_COLUMNS`)."""
    return pd.DataFrame(
        {
            columns.STORE_ID: pd.Series(dtype="int64"),
            columns.SALES_DATE: pd.Series(dtype="datetime64[ns]"),
            columns.OPEN: pd.Series(dtype="int8"),
            columns.PROMO: pd.Series(dtype="int8"),
            columns.STATE_HOLIDAY: pd.Series(dtype=object),
            columns.SCHOOL_HOLIDAY: pd.Series(dtype="int8"),
        }
    )


def as_plan(future: pd.DataFrame) -> pd.DataFrame:
    """Plan rows from validated future covariates (`columns.FUTURE_COLUMNS`), one per store
    and day (the product column, if any, is dropped: a plan row holds for the whole store)."""
    plan = future[list(PLAN_COLUMNS)].drop_duplicates(
        [columns.STORE_ID, columns.SALES_DATE], keep="last"
    )
    return plan.astype(
        {
            columns.STORE_ID: "int64",
            columns.OPEN: "int8",
            columns.PROMO: "int8",
            columns.SCHOOL_HOLIDAY: "int8",
            columns.STATE_HOLIDAY: str,
        }
    ).reset_index(drop=True)


def apply_plan(
    future: pd.DataFrame, plan: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fill the covariates a caller left missing from the plan.

    Args:
        future: `store_id`, `date` and any covariates (a missing column or value is not given).
        plan: `PLAN_COLUMNS` (None or empty: no plan).

    Returns:
        `future` with the planned values filled in (other values still missing, for the
        bundle to derive), and a boolean frame of `PLANNED_COVARIATES` telling which value
        came from the plan.
    """
    frame = future.reset_index(drop=True).copy()
    planned = pd.DataFrame(False, index=frame.index, columns=list(PLANNED_COVARIATES))
    if plan is None or plan.empty or frame.empty:
        return frame, planned
    found = frame[[columns.STORE_ID, columns.SALES_DATE]].merge(
        plan, on=[columns.STORE_ID, columns.SALES_DATE], how="left", validate="many_to_one"
    )
    for name in PLANNED_COVARIATES:
        given = (
            frame[name].astype(object)
            if name in frame
            else pd.Series(None, index=frame.index, dtype=object)
        )
        take = given.isna().to_numpy() & found[name].notna().to_numpy()
        planned[name] = take
        filled = given.where(~take, found[name].astype(object).to_numpy())
        # Flags stay numeric (NaN where still missing), as a caller's frame has them.
        frame[name] = filled if name == columns.STATE_HOLIDAY else pd.to_numeric(filled)
    return frame, planned


def by_store(plan: pd.DataFrame) -> dict[int, dict[dt.date, dict[str, Any]]]:
    """The plan as nested dictionaries, store -> day -> covariates (JSON-ready values)."""
    nested: dict[int, dict[dt.date, dict[str, Any]]] = {}
    for row in plan.to_dict("records"):
        nested.setdefault(int(row[columns.STORE_ID]), {})[
            pd.Timestamp(row[columns.SALES_DATE]).date()
        ] = {
            columns.OPEN: int(row[columns.OPEN]),
            columns.PROMO: int(row[columns.PROMO]),
            columns.STATE_HOLIDAY: str(row[columns.STATE_HOLIDAY]),
            columns.SCHOOL_HOLIDAY: int(row[columns.SCHOOL_HOLIDAY]),
        }
    return nested
