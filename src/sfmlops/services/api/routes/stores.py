"""Stores and their sales history."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from sfmlops.adapters.db import sales_records, store_records
from sfmlops.core import columns
from sfmlops.services.api import schemas
from sfmlops.services.api.deps import ReadEngineDep, SettingsDep
from sfmlops.services.status import as_of_date

router = APIRouter(prefix="/v1/stores", tags=["stores"])

DEFAULT_HISTORY_DAYS = 56  # eight weeks: what a planner looks at beside a forecast
ProductQuery = Annotated[
    str, Query(min_length=1, max_length=64, description="The series' product.")
]
# Ids beyond the database's 32-bit store_id are refused as input errors, not sent to it.
StoreIdPath = Annotated[int, Path(ge=0, le=schemas.MAX_STORE_ID, description="The store.")]


def shifted_day(day: dt.date, days: int) -> dt.date:
    """`day` moved by `days`, stopping at the calendar's first or last day: a window asked for
    near 0001-01-01 or 9999-12-31 is valid input, not a server error."""
    try:
        return day + dt.timedelta(days=days)
    except OverflowError:
        return dt.date.max if days > 0 else dt.date.min


@router.get("", response_model=schemas.StoreList, summary="List stores")
def list_stores(
    engine: ReadEngineDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> schemas.StoreList:
    with engine.connect() as connection:
        stores = store_records.list_stores(connection)
    page = stores.iloc[offset : offset + limit]
    records = page.astype(object).where(page.notna(), None).to_dict("records")
    return schemas.StoreList(
        stores=[schemas.Store.model_validate(r) for r in records], total=len(stores)
    )


@router.get(
    "/{store_id}",
    response_model=schemas.StoreDetail,
    responses={404: {"model": schemas.ErrorBody}},
    summary="One store with its series",
)
def get_store(store_id: StoreIdPath, engine: ReadEngineDep) -> schemas.StoreDetail:
    with engine.connect() as connection:
        store = store_records.get_store(connection, store_id)
        series = store_records.store_series(connection, store_id) if store else []
    if store is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown store {store_id}")
    return schemas.StoreDetail(
        **store,
        series=[
            schemas.SeriesSpan(
                product_id=s.product_id,
                first_sales_date=s.first_date,
                last_sales_date=s.last_date,
                days=s.rows,
            )
            for s in series
        ],
    )


@router.get(
    "/{store_id}/sales",
    response_model=schemas.SalesHistory,
    responses={404: {"model": schemas.ErrorBody}, 422: {"model": schemas.ErrorBody}},
    summary="A store's sales history",
)
def get_sales(
    store_id: StoreIdPath,
    engine: ReadEngineDep,
    settings: SettingsDep,
    start: Annotated[
        dt.date | None, Query(description="First day (default: 8 weeks before end).")
    ] = None,
    end: Annotated[dt.date | None, Query(description="Last day (default: the as-of date).")] = None,
    product_id: ProductQuery = columns.DEFAULT_PRODUCT,
) -> schemas.SalesHistory:
    with engine.connect() as connection:
        if store_records.get_store(connection, store_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown store {store_id}")
        last = end or as_of_date(settings, connection) or dt.date.today()
        first = start or shifted_day(last, -(DEFAULT_HISTORY_DAYS - 1))
        if first > last:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"start {first} is after end {last}"
            )
        history = sales_records.read_sales(connection, [store_id], first, last, product_id)
        if history.empty and not store_records.has_series(connection, store_id, product_id):
            if product_id != columns.DEFAULT_PRODUCT or not store_records.store_series(
                connection, store_id
            ):
                raise HTTPException(
                    status.HTTP_404_NOT_FOUND,
                    f"store {store_id} has no sales of product {product_id!r}",
                )
            # A store whose series are products: its total is their sum.
            history = sales_records.read_store_totals(connection, store_id, first, last)
    days = [
        schemas.SalesDay(
            sales_date=row[columns.SALES_DATE].date(),
            sales=row[columns.SALES],
            customers=None
            if row[columns.CUSTOMERS] is None or row[columns.CUSTOMERS] != row[columns.CUSTOMERS]
            else int(row[columns.CUSTOMERS]),
            open=row[columns.OPEN],
            promo=row[columns.PROMO],
            state_holiday=row[columns.STATE_HOLIDAY],
            school_holiday=row[columns.SCHOOL_HOLIDAY],
        )
        for row in history.to_dict("records")
    ]
    return schemas.SalesHistory(
        store_id=store_id, product_id=product_id, start=first, end=last, days=days
    )
