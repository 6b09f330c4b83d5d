"""Forecasts from the champion in memory, the pipeline's precomputed forecasts, the champion."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from sfmlops.adapters.db import forecast_records
from sfmlops.core import columns
from sfmlops.services.api import schemas, serving
from sfmlops.services.api.deps import MetricsDep, ModelCacheDep, ModelDep, ReadEngineDep
from sfmlops.services.api.model_cache import NO_CHAMPION
from sfmlops.services.api.routes.stores import ProductQuery, StoreIdPath

router = APIRouter(tags=["forecasts"])

MAX_BATCH_SERIES = 10_000
JSON = "application/json"
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorBody},
    422: {"model": schemas.ErrorBody},
    503: {"model": schemas.ErrorBody, "description": "No champion model is loaded."},
}
DaysQuery = Annotated[
    int,
    Query(ge=1, le=serving.MAX_REQUEST_DAYS, description="Days to forecast from `start`."),
]
StartQuery = Annotated[
    dt.date | None,
    Query(description="First day (default: the day after the as-of date)."),
]


@router.get(
    "/v1/stores/{store_id}/forecast",
    response_model=schemas.SeriesForecast,
    responses=_ERRORS,
    summary="A store's forecast from the champion",
)
async def store_forecast(
    store_id: StoreIdPath,
    model: ModelDep,
    metrics: MetricsDep,
    days: DaysQuery = serving.DEFAULT_HORIZON_DAYS,
    start: StartQuery = None,
    product_id: ProductQuery = columns.DEFAULT_PRODUCT,
) -> Response:
    # Async on purpose: the default horizon is a dictionary lookup and any other start and
    # length within the calibrated horizon a slice, answered on the event loop; anything
    # that predicts goes to the thread pool.
    key = (store_id, product_id)
    serving.check_series(model, key)
    if (start is None or start == model.default_start) and days == serving.DEFAULT_HORIZON_DAYS:
        body = model.default_bodies[key]
    else:
        request = serving.SeriesRequest(
            store_id, product_id, serving.horizon(start or model.default_start, days)
        )
        sliced = serving.sliced(model, request)
        if sliced is None:
            (sliced,) = await run_in_threadpool(serving.forecast, model, [request])
        body = sliced
    metrics.forecasts_served.labels(endpoint="store").inc(days)
    return Response(body, media_type=JSON)


@router.post(
    "/v1/forecast",
    response_model=schemas.BatchForecast,
    responses=_ERRORS,
    summary="Forecasts for a batch of series (up to every store)",
)
async def batch_forecast(
    items: Annotated[
        list[schemas.SeriesForecastRequest],
        Body(min_length=1, max_length=MAX_BATCH_SERIES),
    ],
    model: ModelDep,
    metrics: MetricsDep,
) -> Response:
    requests = [_series_request(item, model.default_start) for item in items]
    bodies = await run_in_threadpool(serving.forecast, model, requests)
    metrics.forecasts_served.labels(endpoint="batch").inc(sum(len(r.dates) for r in requests))
    return Response(serving.batch_json(model.version, bodies), media_type=JSON)


@router.get(
    "/v1/forecasts/latest",
    response_model=schemas.LatestForecasts,
    responses={404: {"model": schemas.ErrorBody}},
    summary="The forecast pipeline's latest precomputed forecasts",
)
def latest_forecasts(
    engine: ReadEngineDep,
    store_id: Annotated[
        int | None, Query(ge=0, le=schemas.MAX_STORE_ID, description="One store (default: all).")
    ] = None,
    product_id: ProductQuery = columns.DEFAULT_PRODUCT,
) -> schemas.LatestForecasts:
    with engine.connect() as connection:
        rows = forecast_records.latest_forecasts(
            connection, store_id=store_id, product_id=product_id
        )
    if rows.empty:
        which = f" for store {store_id} product {product_id!r}" if store_id is not None else ""
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no precomputed forecasts{which} yet: run `sfmlops pipeline forecast`",
        )
    first = rows.iloc[0]
    return schemas.LatestForecasts(
        model_version=str(first["model_version"]),
        created_at=first["created_at"],
        forecasts=[
            schemas.PrecomputedForecastDay(
                store_id=int(row[columns.STORE_ID]),
                product_id=str(row[columns.PRODUCT_ID]),
                date=row[columns.SALES_DATE].date(),
                # To the cent, as the champion's forecasts are served.
                **{name: round(float(row[name]), 2) for name in columns.FORECAST_VALUES},
            )
            for row in rows.to_dict("records")
        ],
    )


@router.get(
    "/v1/models/champion",
    response_model=schemas.ChampionModel,
    responses={404: {"model": schemas.ErrorBody}},
    tags=["models"],
    summary="The champion being served: version, training date, backtest metrics",
)
async def champion_model(
    cache: ModelCacheDep,
    store_id: Annotated[
        int | None,
        Query(
            ge=0, le=schemas.MAX_STORE_ID, description="Only this store's series (default: all)."
        ),
    ] = None,
    product_id: ProductQuery = columns.DEFAULT_PRODUCT,
) -> Response:
    model = cache.state.model
    if model is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_CHAMPION)
    if store_id is None:
        return Response(model.champion_body, media_type=JSON)
    key = (store_id, product_id)
    serving.check_series(model, key)
    # A store total summed from products is described by the products' entries.
    series = model.store_totals.get(key, (key,))
    return Response(
        serving.to_json(
            model.champion | {"stores": [model.champion_series[each] for each in series]}
        ),
        media_type=JSON,
    )


def _series_request(
    item: schemas.SeriesForecastRequest, default_start: dt.date
) -> serving.SeriesRequest:
    dates = (
        tuple(item.dates)
        if item.dates is not None
        else serving.horizon(item.start or default_start, item.days or serving.DEFAULT_HORIZON_DAYS)
    )
    # Each day's validated mapping is its covariates as given (its `date` and missing or
    # null fields are never read as covariates): copying 7,805 of them cost a tenth of an
    # every-store POST.
    covariates = {day["date"]: day for day in item.covariates or []}
    if len(covariates) != len(item.covariates or []):
        raise serving.InvalidForecastRequestError(
            f"store {item.store_id}: covariates give a date twice"
        )
    return serving.SeriesRequest(item.store_id, item.product_id, dates, covariates)
