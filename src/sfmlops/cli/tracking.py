"""`sfmlops mlflow`: an MLflow tracking server with the project's settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from sfmlops.cli.context import console, fail, settings_of
from sfmlops.cli.serve import is_loopback


def run_mlflow_server(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(5050, min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(
        2, min=1, help="Worker processes (each imports MLflow: mind small machines)."
    ),
    backend_store_uri: str | None = typer.Option(
        None, help="Where runs and the registry live; default: the SQLite store in SFMLOPS_HOME."
    ),
    artifacts_destination: str | None = typer.Option(
        None,
        help="Artifact root (a folder, or e.g. gs://bucket/path); default: SFMLOPS_HOME/mlartifacts.",
    ),
    allowed_host: list[str] = typer.Option(
        [],
        "--allowed-host",
        help="Extra Host header values to accept (MLflow rejects unknown hosts).",
    ),
) -> None:
    """Run `mlflow server` (point SFMLOPS_MLFLOW_TRACKING_URI at http://HOST:PORT to use it)."""
    settings = settings_of(ctx)
    settings.ensure_home()
    backend = backend_store_uri or f"sqlite:///{settings.home / 'mlflow.db'}"
    artifacts = artifacts_destination or str(settings.mlflow_artifacts_dir)
    if "://" not in artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
    if not is_loopback(host) and not allowed_host:
        fail("listening beyond loopback needs --allowed-host for the names clients use")
    hosts = ["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*", *allowed_host]
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts,
        "--allowed-hosts",
        ",".join(hosts),
    ]
    console.print(
        f"MLflow tracking server on http://{host}:{port} (store: {backend}, artifacts: {artifacts})"
    )
    os.execve(command[0], command, os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true"})
