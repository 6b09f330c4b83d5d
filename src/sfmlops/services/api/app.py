"""The API application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator
from sqlalchemy import Engine
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sfmlops import __version__
from sfmlops.adapters.db.engine import make_engine
from sfmlops.services.api.metrics import ApiMetrics, TrainingJobsCollector, scrape_registry
from sfmlops.services.api.routes import sales, stores, system, training_jobs
from sfmlops.settings import Settings

log = logging.getLogger("sfmlops.api")


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """Build the forecast API.

    Args:
        settings: The process's settings.
        engine: The sales database; when None, one is created at start-up from the settings
            and disposed at shutdown (nothing connects before the app starts).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = engine or make_engine(settings.effective_database_url)
        try:
            yield
        finally:
            if engine is None:
                app.state.engine.dispose()

    app = FastAPI(
        title="sfmlops forecast API",
        version=__version__,
        description="Sales forecasts for every store, served from memory; sales ingestion; training jobs.",
        root_path=settings.api_root_path,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    registry = CollectorRegistry()
    app.state.metrics = ApiMetrics(registry)
    jobs = TrainingJobsCollector(lambda: app.state.engine)
    registry.register(jobs)

    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    _install_error_handlers(app)
    for router in (system.router, stores.router, sales.router, training_jobs.router):
        app.include_router(router)
    Instrumentator(excluded_handlers=["/metrics"], registry=registry).instrument(app)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(
            generate_latest(scrape_registry(registry, jobs)), media_type=CONTENT_TYPE_LATEST
        )

    return app


class BodySizeLimit:
    """Refuse request bodies larger than `max_bytes` with 413, before they are read whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLargeError
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLargeError:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        )
        await response(scope, receive, send)


class _BodyTooLargeError(Exception):
    pass


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # Logged with its traceback for operators; the client gets no internals.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "internal server error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
        )
