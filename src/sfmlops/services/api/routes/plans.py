"""The plan of known future covariates: written by a caller, read back per store."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Body, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool

from sfmlops.adapters.db import plan_records
from sfmlops.core import columns
from sfmlops.services import covariate_plan
from sfmlops.services.api import schemas
from sfmlops.services.api.deps import ModelCacheDep, ReadEngineDep, WriteEngineDep
from sfmlops.services.api.routes.stores import StoreIdPath, shifted_day

router = APIRouter(tags=["plan"])

MAX_PLAN_DAYS = 100_000  # every Rossmann store for about three months
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorBody},
    403: {"model": schemas.ErrorBody},
    422: {"model": schemas.ErrorBody},
}


@router.post(
    "/v1/plan",
    response_model=schemas.PlanStored,
    responses={
        # OpenAPI link: the stored plan of the first day's store, read back.
        200: {
            "links": {
                "PlanOfFirstDay": {
                    "operationRef": "#/paths/~1v1~1stores~1{store_id}~1plan/get",
                    "parameters": {"store_id": "$request.body#/0/store_id"},
                }
            }
        },
        **_ERRORS,
    },
    summary="Store known future covariates (promotions, openings, holidays)",
)
def store_plan(
    days: Annotated[list[schemas.PlanDay], Body(min_length=1, max_length=MAX_PLAN_DAYS)],
    request: Request,
    engine: WriteEngineDep,
    cache: ModelCacheDep,
) -> schemas.PlanStored:
    """Validate every day (all or nothing), store them under the caller, and rebuild the
    served forecasts so that they use the plan from this response on."""
    records = [
        {
            columns.STORE_ID: day.store_id,
            columns.SALES_DATE: day.date.isoformat(),
            columns.OPEN: day.open,
            columns.PROMO: day.promo,
            columns.STATE_HOLIDAY: day.state_holiday,
            columns.SCHOOL_HOLIDAY: day.school_holiday,
        }
        for day in days
    ]
    try:
        plan = covariate_plan.plan_of_records(records, covariate_plan.known_store_ids(engine))
    except covariate_plan.InvalidPlanError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error
    written = covariate_plan.store_plan(
        engine, plan, request.state.caller.name, source="POST /v1/plan"
    )
    cache.refresh()
    return schemas.PlanStored(
        stored=written,
        stores=int(plan[columns.STORE_ID].nunique()),
        first=pd.Timestamp(plan[columns.SALES_DATE].min()).date(),
        last=pd.Timestamp(plan[columns.SALES_DATE].max()).date(),
    )


@router.get(
    "/v1/stores/{store_id}/plan",
    response_model=schemas.StorePlan,
    summary="A store's planned days, with who set each and when",
)
async def read_store_plan(
    store_id: StoreIdPath,
    engine: ReadEngineDep,
    start: Annotated[dt.date | None, Query(description="First day (default: all).")] = None,
    days: Annotated[int | None, Query(ge=1, le=366, description="Days from `start`.")] = None,
) -> schemas.StorePlan:
    until = shifted_day(start, days - 1) if start is not None and days else None

    def read() -> pd.DataFrame:
        with engine.connect() as connection:
            return plan_records.read_plan(
                connection, since=start, until=until, store_id=store_id, with_changes=True
            )

    plan = await run_in_threadpool(read)
    return schemas.StorePlan(
        store_id=store_id,
        days=[
            schemas.PlannedDay(
                store_id=int(row[columns.STORE_ID]),
                date=pd.Timestamp(row[columns.SALES_DATE]).date(),
                open=int(row[columns.OPEN]),
                promo=int(row[columns.PROMO]),
                state_holiday=str(row[columns.STATE_HOLIDAY]),
                school_holiday=int(row[columns.SCHOOL_HOLIDAY]),
                updated_by=str(row[plan_records.UPDATED_BY]),
                updated_at=row[plan_records.UPDATED_AT],
            )
            for row in plan.to_dict("records")
        ],
    )
