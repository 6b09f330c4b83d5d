"""Forecasts from the champion in memory, the pipeline's precomputed forecasts, the champion."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError
from starlette.responses import Response

from sfmlops.adapters.db import forecast_records
from sfmlops.core import columns
from sfmlops.services.api import forecast_json, forecast_requests, schemas, serving
from sfmlops.services.api.deps import MetricsDep, ModelCacheDep, ModelDep, ReadEngineDep
from sfmlops.services.api.model_cache import NO_CHAMPION
from sfmlops.services.api.routes.stores import ProductQuery, StoreIdPath
from sfmlops.services.api.serving import ServedModel

router = APIRouter(tags=["forecasts"])

MAX_BATCH_SERIES = 10_000
JSON = "application/json"
# The POST /v1/forecast body, validated from its JSON bytes (one pass in pydantic-core, no
# Python objects of the JSON in between).
BATCH_BODY: TypeAdapter[list[schemas.SeriesForecastRequest]] = TypeAdapter(
    Annotated[list[schemas.SeriesForecastRequest], Field(min_length=1, max_length=MAX_BATCH_SERIES)]
)
# Its schema as the OpenAPI document shows it; the models it refers to are added to the
# document's components (`REQUEST_SCHEMAS`, by the app factory).
_BATCH_BODY_DOCUMENT = BATCH_BODY.json_schema(ref_template="#/components/schemas/{model}")
REQUEST_SCHEMAS: dict[str, Any] = _BATCH_BODY_DOCUMENT.pop("$defs")
BATCH_BODY_SCHEMA = _BATCH_BODY_DOCUMENT | {"title": "Items"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorBody},
    422: {"model": schemas.ErrorBody},
    503: {"model": schemas.ErrorBody, "description": "No champion model is loaded."},
}
DaysQuery = Annotated[
    int,
    Query(
        ge=1, le=forecast_requests.MAX_REQUEST_DAYS, description="Days to forecast from `start`."
    ),
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
    days: DaysQuery = forecast_requests.DEFAULT_HORIZON_DAYS,
    start: StartQuery = None,
    product_id: ProductQuery = columns.DEFAULT_PRODUCT,
) -> Response:
    # Async on purpose: the default horizon is a dictionary lookup and any other start and
    # length within the calibrated horizon a slice, answered on the event loop; anything
    # that predicts goes to the thread pool.
    key = (store_id, product_id)
    serving.check_series(model, key)
    if (
        start is None or start == model.default_start
    ) and days == forecast_requests.DEFAULT_HORIZON_DAYS:
        body = model.default_bodies[key]
    else:
        request = forecast_requests.SeriesRequest(
            store_id, product_id, serving.horizon(start or model.default_start, days)
        )
        sliced = serving.sliced(model, request)
        if sliced is None:
            batch = forecast_requests.ForecastBatch.of([request])
            (sliced,) = await run_in_threadpool(serving.forecast, model, batch)
        body = sliced
    metrics.forecasts_served.labels(endpoint="store").inc(days)
    return Response(body, media_type=JSON)


@router.post(
    "/v1/forecast",
    response_model=schemas.BatchForecast,
    responses=_ERRORS,
    summary="Forecasts for a batch of series (up to every store)",
    openapi_extra={
        "requestBody": {"content": {JSON: {"schema": BATCH_BODY_SCHEMA}}, "required": True}
    },
)
async def batch_forecast(request: Request, model: ModelDep, metrics: MetricsDep) -> Response:
    # The body is validated here, not by FastAPI: straight from its JSON bytes, and with the
    # forecast in the thread pool, off the event loop (an every-store body is 800 KB).
    if not _is_json(request.headers.get("content-type")):
        raise RequestValidationError(
            [{"loc": ("body",), "msg": "send the batch as JSON (Content-Type: application/json)"}]
        )
    body, days = await run_in_threadpool(_batch_answer, model, await request.body())
    metrics.forecasts_served.labels(endpoint="batch").inc(days)
    return Response(body, media_type=JSON)


def _batch_answer(model: ServedModel, body: bytes) -> tuple[bytes, int]:
    """The POST /v1/forecast response to a body, and the series-days it forecasts."""
    try:
        items = BATCH_BODY.validate_json(body)
    except ValidationError as error:
        raise RequestValidationError(
            [problem | {"loc": ("body", *problem["loc"])} for problem in error.errors()]
        ) from None
    batch = _forecast_batch(items, model.default_start)
    forecasts = serving.forecast(model, batch)
    return serving.batch_json(model.version, forecasts), int(batch.day_counts.sum())


def _forecast_batch(
    items: Sequence[schemas.SeriesForecastRequest], default_start: dt.date
) -> forecast_requests.ForecastBatch:
    """A validated body as columns: each series' days, and every day's covariates as given
    (a missing or null field is not given)."""
    day_counts: list[int] = []
    day_ordinals: list[int] = []
    for item in items:
        if item.dates is not None:
            day_counts.append(len(item.dates))
            day_ordinals.extend(day.toordinal() for day in item.dates)
        else:
            first = (item.start or default_start).toordinal()
            days = item.days or forecast_requests.DEFAULT_HORIZON_DAYS
            day_counts.append(days)
            day_ordinals.extend(range(first, first + days))
    entries = [(index, day) for index, item in enumerate(items) for day in item.covariates or ()]
    return forecast_requests.ForecastBatch.of_columns(
        [item.store_id for item in items],
        [item.product_id for item in items],
        day_counts,
        day_ordinals,
        [index for index, _ in entries],
        [day["date"].toordinal() for _, day in entries],
        {name: [day.get(name) for _, day in entries] for name in forecast_requests.COVARIATES},
    )


def _is_json(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON (application/json or application/*+json)."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == JSON or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


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
        forecast_json.to_json(
            model.champion | {"stores": [model.champion_series[each] for each in series]}
        ),
        media_type=JSON,
    )
