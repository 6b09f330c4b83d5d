"""Request dependencies: settings, the database engines, metrics, the champion, the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from sqlalchemy import Engine

from sfmlops.adapters.db import audit
from sfmlops.services.api.auth import Caller
from sfmlops.services.api.model_cache import NO_CHAMPION, ModelCache
from sfmlops.services.api.prometheus_metrics import ApiMetrics
from sfmlops.services.api.serving import ServedModel
from sfmlops.settings import Settings

_bearer = HTTPBearer(
    auto_error=False,
    description=(
        "SFMLOPS_API_TOKEN (reads and writes) or SFMLOPS_API_READ_TOKEN (reads); required on "
        "every endpoint but /health, /ready and /metrics when a token is configured."
    ),
)


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _read_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.read_engine
    return engine


async def _write_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.write_engine
    return engine


async def _metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


async def _model_cache(request: Request) -> ModelCache:
    cache: ModelCache = request.app.state.model_cache
    return cache


async def _served_model(request: Request) -> ServedModel:
    cache: ModelCache = request.app.state.model_cache
    model = cache.state.model
    if model is None:
        raise ModelUnavailableError(cache.state.problem or NO_CHAMPION)
    return model


class ModelUnavailableError(Exception):
    """No champion is loaded (HTTP 503 on forecast endpoints)."""


# The dependencies are `async def` because they only read app state: a plain `def` would
# cost every request a trip through the thread pool.
SettingsDep = Annotated[Settings, Depends(_settings)]
# Two engines on the same database, so that a route says which it needs: reads may go through
# a role that can only read (SFMLOPS_DATABASE_READ_URL), writes through one that may write.
ReadEngineDep = Annotated[Engine, Depends(_read_engine)]
WriteEngineDep = Annotated[Engine, Depends(_write_engine)]
MetricsDep = Annotated[ApiMetrics, Depends(_metrics)]
ModelCacheDep = Annotated[ModelCache, Depends(_model_cache)]
ModelDep = Annotated[ServedModel, Depends(_served_model)]


async def _caller(request: Request) -> Caller:
    caller: Caller = request.state.caller
    return caller


CallerDep = Annotated[Caller, Depends(_caller)]

# Documents the bearer scheme in OpenAPI (the "Authorize" button of /docs); the check itself is
# the TokenAuth middleware, which also guards routes that forget to declare anything.
BearerDoc = Depends(_bearer)


def record_write(
    request: Request, engine: Engine, action: str, detail: dict[str, object] | None = None
) -> None:
    """Add a write to the audit log under the caller who made it."""
    caller: Caller = request.state.caller
    client = request.client.host if request.client else None
    with engine.begin() as connection:
        audit.record(connection, caller.name, action, detail, client)
