"""Liveness, readiness and data status."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from sfmlops.services.api import schemas
from sfmlops.services.api.deps import EngineDep, ModelCacheDep, SettingsDep
from sfmlops.services.status import system_status

router = APIRouter(tags=["system"])


@router.get("/health", response_model=schemas.Health, summary="Liveness")
def health() -> schemas.Health:
    return schemas.Health(status="ok")


@router.get(
    "/ready",
    response_model=schemas.Readiness,
    responses={503: {"model": schemas.Readiness}},
    summary="Readiness: a champion model is loaded and the database answers",
)
def ready(response: Response, engine: EngineDep, cache: ModelCacheDep) -> schemas.Readiness:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return schemas.Readiness(
            status="unavailable", reason=f"database unreachable: {error.__class__.__name__}"
        )
    state = cache.state
    if state.model is None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return schemas.Readiness(status="unavailable", reason=state.problem)
    if state.problem is not None:
        # Still serving the loaded champion, but it may be stale: ready, degraded.
        return schemas.Readiness(
            status="degraded", reason=state.problem, model_version=state.model.version
        )
    return schemas.Readiness(status="ready", model_version=state.model.version)


@router.get(
    "/v1/status",
    response_model=schemas.Status,
    tags=["status"],
    summary="Data freshness and champion",
)
def get_status(engine: EngineDep, settings: SettingsDep, cache: ModelCacheDep) -> schemas.Status:
    with engine.connect() as connection:
        current = system_status(settings, connection)
    return schemas.Status(
        as_of=current.as_of,
        latest_sales_date=current.latest_sales_date,
        sales_rows=current.sales_rows,
        stores=current.stores,
        sales_ingested_last_day=current.sales_ingested_last_day,
        dead_letters_last_day=current.dead_letters_last_day,
        champion_version=cache.state.model.version if cache.state.model else None,
    )
