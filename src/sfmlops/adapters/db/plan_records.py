"""The plan of known future covariates: upserts and reads of the `covariate_plan` table.

Every function takes an open `Connection`, so the caller decides the transaction.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
from sqlalchemy import Connection, func, select

from sfmlops.adapters.db.rows import _insert, _records
from sfmlops.adapters.db.tables import covariate_plan
from sfmlops.core import columns
from sfmlops.core.forecasting.plan import PLAN_COLUMNS, PLANNED_COVARIATES, empty_plan

UPDATED_BY = "updated_by"
UPDATED_AT = "updated_at"


def upsert_plan(connection: Connection, plan: pd.DataFrame, updated_by: str) -> int:
    """Insert or replace plan rows (`plan.PLAN_COLUMNS`), each marked with who set it and
    when; returns the rows written."""
    if plan.empty:
        return 0
    rows = _records(plan[list(PLAN_COLUMNS)])
    for row in rows:
        row[columns.SALES_DATE] = pd.Timestamp(row[columns.SALES_DATE]).date()
        row[UPDATED_BY] = updated_by
    statement = _insert(connection, covariate_plan)
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[covariate_plan.c.store_id, covariate_plan.c.sales_date],
        set_={name: excluded[name] for name in (*PLANNED_COVARIATES, UPDATED_BY)}
        | {UPDATED_AT: func.now()},
    )
    connection.execute(statement, rows)
    return len(rows)


def read_plan(
    connection: Connection,
    since: dt.date | None = None,
    until: dt.date | None = None,
    store_id: int | None = None,
    *,
    with_changes: bool = False,
) -> pd.DataFrame:
    """Plan rows (`plan.PLAN_COLUMNS`, dates as timestamps) from `since` to `until`
    (inclusive; None: unbounded), optionally of one store, ordered by store and day.
    `with_changes` adds who set each row and when (`updated_by`, `updated_at`)."""
    selected = [covariate_plan.c[name] for name in PLAN_COLUMNS]
    if with_changes:
        selected += [covariate_plan.c[UPDATED_BY], covariate_plan.c[UPDATED_AT]]
    query = select(*selected).order_by(covariate_plan.c.store_id, covariate_plan.c.sales_date)
    if since is not None:
        query = query.where(covariate_plan.c.sales_date >= since)
    if until is not None:
        query = query.where(covariate_plan.c.sales_date <= until)
    if store_id is not None:
        query = query.where(covariate_plan.c.store_id == store_id)
    rows = connection.execute(query).all()
    if not rows:
        frame = empty_plan()
        if with_changes:
            frame[UPDATED_BY] = pd.Series(dtype=object)
            frame[UPDATED_AT] = pd.Series(dtype="datetime64[ns, UTC]")
        return frame
    frame = pd.DataFrame(rows, columns=[column.name for column in selected])
    frame[columns.SALES_DATE] = pd.to_datetime(frame[columns.SALES_DATE])
    return frame.astype(
        {
            columns.STORE_ID: "int64",
            columns.OPEN: "int8",
            columns.PROMO: "int8",
            columns.SCHOOL_HOLIDAY: "int8",
            columns.STATE_HOLIDAY: str,
        }
    )


def plan_revision(connection: Connection) -> tuple[int, str]:
    """Rows and the latest change of the plan: differs whenever the plan was written."""
    count, latest = connection.execute(
        select(func.count(), func.max(covariate_plan.c.updated_at))
    ).one()
    return int(count), str(latest)
