"""Request dependencies: settings, the database engine, metrics, the champion, the write token."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from sfmlops.services.api.model_cache import NO_CHAMPION, ModelCache
from sfmlops.services.api.prometheus_metrics import ApiMetrics
from sfmlops.services.api.serving import ServedModel
from sfmlops.settings import Settings

_bearer = HTTPBearer(
    auto_error=False, description="Required on write endpoints when SFMLOPS_API_TOKEN is set."
)


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
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
EngineDep = Annotated[Engine, Depends(_engine)]
MetricsDep = Annotated[ApiMetrics, Depends(_metrics)]
ModelCacheDep = Annotated[ModelCache, Depends(_model_cache)]
ModelDep = Annotated[ServedModel, Depends(_served_model)]


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Reject a write without the configured bearer token.

    With no token configured the API only listens on loopback (`sfmlops serve` refuses
    anything else), so local writes are open there.
    """
    if settings.api_token is None:
        return
    expected = settings.api_token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials else b""
    if not hmac.compare_digest(given, expected):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


TokenDep = Depends(require_token)
