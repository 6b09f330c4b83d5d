"""`sfmlops serve`: the forecast API."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import NoReturn

import typer

from sfmlops.cli.context import console, fail, settings_of
from sfmlops.services.api.logs import configure_logging
from sfmlops.settings import Settings


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(4242, min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(
        1, min=1, max=64, help="Worker processes (gunicorn + uvicorn workers when > 1)."
    ),
    log_level: str = typer.Option("info", help="Log level."),
) -> None:
    """Run the forecast API (OpenAPI docs at /docs)."""
    settings = settings_of(ctx)
    if not is_loopback(host) and settings.api_token is None and settings.api_read_token is None:
        fail(
            f"refusing to listen on {host} without SFMLOPS_API_TOKEN: every endpoint would be "
            "open to the network (set a token of at least 32 characters, or listen on 127.0.0.1)"
        )
    settings.ensure_home()
    console.print(f"Forecast API on http://{host}:{port} (docs: http://{host}:{port}/docs)")
    if workers == 1:
        import uvicorn  # noqa: PLC0415 - the server is only needed by this command

        from sfmlops.services.api import create_app  # noqa: PLC0415

        configure_logging(log_level.upper())
        uvicorn.run(
            create_app(settings, settle_heap=True),
            host=host,
            port=port,
            log_config=None,
            access_log=True,
        )
        return
    _run_gunicorn(settings, host, port, workers, log_level)


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


def _run_gunicorn(
    settings: Settings, host: str, port: int, workers: int, log_level: str
) -> NoReturn:
    # Workers share their metrics through files, so any worker's /metrics tells the whole
    # story. prometheus_client reads the folder at import, so gunicorn starts in a fresh
    # process with it already set.
    metrics_dir = settings.home / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [
        str(gunicorn),
        "--config",
        "python:sfmlops.services.api.gunicorn_conf",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "sfmlops.services.api.server:app_from_environment()",
    ]
    env = os.environ | {
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "SFMLOPS_LOG_LEVEL": log_level,
    }
    os.execve(gunicorn, command, env)
