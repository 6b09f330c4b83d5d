"""Liveness, readiness and data status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from sfmlops.core.forecasting.models import MODEL_NAMES, model_installed
from sfmlops.services.api import schemas
from sfmlops.services.api.database_probe import DatabaseProbe
from sfmlops.services.api.deps import ModelCacheDep, ReadEngineDep, SettingsDep
from sfmlops.services.status import system_status

router = APIRouter(tags=["system"])


@router.get("/health", response_model=schemas.Health, summary="Liveness")
def health() -> schemas.Health:
    return schemas.Health(status="ok")


@router.get(
    "/ready",
    response_model=schemas.Readiness,
    responses={503: {"model": schemas.Readiness}},
    summary="Readiness: the database answers (within 2 s) and a champion model is loaded",
)
def ready(
    response: Response,
    request: Request,
    cache: ModelCacheDep,
    require_model: Annotated[
        bool,
        Query(
            description=(
                "false: ready as soon as the database answers, with or without a model "
                "(Kubernetes' readiness probe: a fresh install must serve before its first model)."
            )
        ),
    ] = True,
) -> schemas.Readiness:
    probe: DatabaseProbe = request.app.state.database_probe
    problem = probe.problem()
    if problem is not None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return schemas.Readiness(status="unavailable", reason=problem)
    state = cache.state
    if state.model is None and not require_model:
        return schemas.Readiness(status="degraded", reason=state.problem)
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
def get_status(
    engine: ReadEngineDep, settings: SettingsDep, cache: ModelCacheDep
) -> schemas.Status:
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
        trainable_models=[name for name in MODEL_NAMES if model_installed(name)],
    )
