"""The API application factory."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator
from sqlalchemy import Engine
from sqlalchemy.exc import (
    DBAPIError,
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as SqlPoolTimeoutError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sfmlops import __version__
from sfmlops.adapters.db.engine import SQLITE_READER_CACHE_KIB, make_engine
from sfmlops.core.validation import shortened
from sfmlops.services.api.auth import TokenAuth
from sfmlops.services.api.database_probe import DatabaseProbe
from sfmlops.services.api.deps import BearerDoc, ModelUnavailableError
from sfmlops.services.api.forecast_requests import InvalidForecastRequestError, UnknownSeriesError
from sfmlops.services.api.model_cache import ModelCache
from sfmlops.services.api.prometheus_metrics import (
    ApiMetrics,
    ModelQualityCollector,
    TrainingJobsCollector,
    scrape_registry,
)
from sfmlops.services.api.routes import (
    accuracy,
    dead_letters,
    forecasts,
    jobs,
    plans,
    sales,
    stores,
    system,
)
from sfmlops.services.api.serving import ServedModel
from sfmlops.settings import Settings

log = logging.getLogger("sfmlops.api")


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    *,
    read_engine: Engine | None = None,
    settle_heap: bool = False,
) -> FastAPI:
    """Build the forecast API.

    Writes (sales ingestion, training jobs, plan edits, the audit log) go through `engine`;
    the read routes, the champion poller's reads and the metrics collectors through
    `read_engine`, which may log in as a role that can only read.

    Args:
        settings: The process's settings.
        engine: The sales database for writes; when None, one is created at start-up from
            SFMLOPS_DATABASE_URL and disposed at shutdown (nothing connects before the app
            starts).
        read_engine: The sales database for reads; when None, `engine` if given, else one
            created at start-up from SFMLOPS_DATABASE_READ_URL, or the writer's when that is
            unset (one pool, not two, for the same role).
        settle_heap: After each champion load, exempt what is then alive from the cyclic
            garbage collector (`settle_garbage_collector`); for a server process, not for an app built
            inside another program (a test run's heap would be collected at every load).
    """
    # Before the champion loads: unpickling a gbm imports LightGBM, whose OpenMP runtime
    # reads its wait policy once, when it loads, and by default spins idle threads after
    # every parallel call, taking a core from the other worker and the other requests on
    # shared cores. The gbm sets the same policy when it imports LightGBM itself
    # (`gbm._lightgbm`), which in a server comes after the unpickling: too late.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        made: list[Engine] = []
        if engine is None:
            made.append(_server_engine(settings, settings.effective_database_url))
        app.state.write_engine = engine or made[0]
        read_url = settings.database_read_url
        if (
            read_engine is None
            and engine is None
            and read_url not in (None, settings.effective_database_url)
        ):
            made.append(_server_engine(settings, str(read_url)))
            app.state.read_engine = made[-1]
        else:
            app.state.read_engine = read_engine or app.state.write_engine
        # Serving starts with the champion loaded (or a reason why not): no request sees a
        # half-started model cache.
        await anyio.to_thread.run_sync(app.state.model_cache.start)
        try:
            yield
        finally:
            app.state.database_probe.close()
            await anyio.to_thread.run_sync(app.state.model_cache.stop)
            for each in made:
                each.dispose()

    # /docs and /redoc from Swagger UI and ReDoc files in a pinned package, not a CDN: the
    # pages work on a machine or cluster without internet access.
    app = FastAPIOffline(
        title="sfmlops forecast API",
        version=__version__,
        description="Sales forecasts for every store, served from memory; sales ingestion; training jobs.",
        root_path=settings.api_root_path,
        lifespan=lifespan,
        dependencies=[BearerDoc],
    )
    app.state.settings = settings
    app.state.write_engine = engine
    app.state.read_engine = read_engine or engine
    registry = CollectorRegistry()
    app.state.metrics = ApiMetrics(registry)

    def changed(model: ServedModel) -> None:
        app.state.metrics.show_model(model)
        if settle_heap:
            settle_garbage_collector()

    app.state.model_cache = ModelCache(
        settings,
        read_engine=lambda: app.state.read_engine,
        write_engine=lambda: app.state.write_engine,
        on_change=changed,
    )
    app.state.database_probe = DatabaseProbe(lambda: _probed_engines(app))
    database_collectors = (
        TrainingJobsCollector(lambda: app.state.read_engine),
        ModelQualityCollector(lambda: app.state.read_engine, settings.metrics_worst_stores),
    )
    for collector in database_collectors:
        registry.register(collector)

    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    # Added last, so it runs first: an unauthenticated body is refused before it is read.
    app.add_middleware(TokenAuth, settings=settings)
    _install_error_handlers(app)
    routers = (
        system.router,
        stores.router,
        forecasts.router,
        sales.router,
        dead_letters.router,
        jobs.router,
        accuracy.router,
        plans.router,
    )
    for router in routers:
        app.include_router(router)
    app.openapi = _with_request_schemas(app.openapi, forecasts.REQUEST_SCHEMAS)  # type: ignore[method-assign]
    Instrumentator(excluded_handlers=["/metrics"], registry=registry).instrument(app)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(
            generate_latest(scrape_registry(registry, database_collectors)),
            media_type=CONTENT_TYPE_LATEST,
        )

    return app


def _with_request_schemas(
    openapi: Callable[[], dict[str, Any]], request_schemas: Mapping[str, Any]
) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document with the schemas of bodies a route validates itself (documented
    in its `openapi_extra`, so FastAPI does not list their models) among its components."""

    def document() -> dict[str, Any]:
        described = openapi()
        components = described.setdefault("components", {}).setdefault("schemas", {})
        components.update(request_schemas)
        described["components"]["schemas"] = dict(sorted(components.items()))
        return described

    return document


def _server_engine(settings: Settings, url: str) -> Engine:
    return make_engine(
        url,
        statement_timeout_seconds=settings.api_statement_timeout_seconds,
        sqlite_cache_kib=SQLITE_READER_CACHE_KIB,
    )


def _probed_engines(app: FastAPI) -> dict[str, Engine]:
    """The engines readiness pings, by the name its answer gives them (each engine once)."""
    write_engine: Engine = app.state.write_engine
    read_engine: Engine = app.state.read_engine
    if read_engine is write_engine:
        return {"database": write_engine}
    return {"database": write_engine, "read-only database": read_engine}


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
        exceeded = False
        answered = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            # FastAPI turns any error while reading the body into its own 400; a body cut
            # short by the limit (a chunked one has no Content-Length) is answered 413 here.
            nonlocal answered
            if exceeded and not answered:
                return
            answered = True
            await send(message)

        with suppress(_BodyTooLargeError):
            await self.app(scope, counting_receive, guarded_send)
        if exceeded and not answered:
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
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"detail": validation_message(error)},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    @app.exception_handler(UnknownSeriesError)
    async def unknown_series(_request: Request, error: UnknownSeriesError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=status.HTTP_404_NOT_FOUND)

    @app.exception_handler(InvalidForecastRequestError)
    async def invalid_forecast(
        _request: Request, error: InvalidForecastRequestError
    ) -> JSONResponse:
        return JSONResponse(
            {"detail": str(error)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
        )

    @app.exception_handler(ModelUnavailableError)
    async def no_model(_request: Request, error: ModelUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def database_unavailable(request: Request, error: DBAPIError) -> JSONResponse:
        # Down, restarting, unreachable or too slow: the client may retry; nothing half-done was
        # acknowledged (each write is one transaction).
        log.warning(
            "database unavailable on %s %s: %s", request.method, request.url.path, error.orig
        )
        return JSONResponse(
            {"detail": f"database unavailable ({type(error.orig).__name__}); retry shortly"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(InternalError)
    @app.exception_handler(ProgrammingError)
    async def database_refused(request: Request, error: DBAPIError) -> JSONResponse:
        # A role without the privilege: a write through a role that may only read
        # (SFMLOPS_DATABASE_URL naming the read-only role), or a read of a table the read
        # role was not granted. Nothing was written; a configuration error, not the client's.
        if getattr(error.orig, "pgcode", None) not in _PRIVILEGE_CODES:
            return await unexpected(request, error)
        log.error(
            "the database refused %s %s for lack of privilege: %s",
            request.method,
            request.url.path,
            str(error.orig).splitlines()[0],
        )
        return JSONResponse(
            {
                "detail": "the database refused the statement: this API's database role lacks "
                "the privilege (SFMLOPS_DATABASE_URL must name a role that may write, "
                "SFMLOPS_DATABASE_READ_URL one that may read)"
            },
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )

    @app.exception_handler(SqlPoolTimeoutError)
    async def pool_exhausted(request: Request, _error: SqlPoolTimeoutError) -> JSONResponse:
        log.warning("no free database connection for %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "database busy: no free connection; retry shortly"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # Logged with its traceback for operators; the client gets no internals.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "internal server error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
        )


# PostgreSQL's SQLSTATEs of a statement refused to the role: a write in a read-only
# transaction (the read role's default_transaction_read_only) and a missing privilege.
_PRIVILEGE_CODES = frozenset({"25006", "42501"})


def settle_garbage_collector() -> None:
    """Collect, then exempt everything alive from later collections (`gc.freeze`).

    A forecast for every store allocates tens of thousands of objects that outlive the young
    generations' collections, so every few such requests Python's collector traversed the
    whole heap (modules, the champion's mappings: hundreds of thousands of objects), a pause
    that made a POST's p90 twice its p50. Frozen objects are skipped by collections but still
    freed by reference counting; `gc.unfreeze` first returns the previous champion's objects
    to the collector, so cycles it left are collected here, at the next load.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def validation_message(error: RequestValidationError, limit: int = 5) -> str:
    """One readable line per problem, e.g. `query.days: Input should be ...` (the contract's
    errors are `{"detail": "<message>"}`, not FastAPI's list of objects)."""
    problems = []
    for problem in error.errors()[:limit]:
        # A location can hold the caller's own text (the name of an unknown field), and so can
        # a message: both are cut.
        location = ".".join(shortened(str(part)) for part in problem.get("loc", ()))
        problems.append(f"{location}: {shortened(str(problem.get('msg', 'invalid')), 200)}")
    more = len(error.errors()) - limit
    if more > 0:
        problems.append(f"and {more} more")
    return "; ".join(problems)
