"""`sfmlops mlflow`: an MLflow tracking server with the project's settings.

With `--auth` it runs MLflow's basic-auth app: every request needs a user's credentials (clients
send MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD, which MLflow's client reads itself). The
admin account comes from MLFLOW_AUTH_ADMIN_USERNAME/MLFLOW_AUTH_ADMIN_PASSWORD, which have no
default; other users get no permission until the admin grants one.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import typer

from sfmlops.cli.context import console, fail, settings_of
from sfmlops.cli.serve import is_loopback
from sfmlops.settings import MIN_TOKEN_CHARS

AUTH_CONFIG = """[mlflow]
default_permission = NO_PERMISSIONS
database_uri = {database_uri}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


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
    auth: bool = typer.Option(
        False,
        "--auth",
        help="Require credentials (MLflow's basic-auth app; the admin from MLFLOW_AUTH_ADMIN_*).",
    ),
    auth_database_uri: str | None = typer.Option(
        None, help="Where --auth keeps its users; default: SQLite in SFMLOPS_HOME."
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
    if not is_loopback(host) and not auth:
        fail(
            f"refusing to listen on {host} without --auth: anyone who reaches it could replace "
            "the registered models"
        )
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
    environment = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true"}
    # MLflow's job execution (GenAI scorers, trace rollups: nothing sfmlops uses) would start
    # about eight Huey consumers of ~230 MiB each; a user who wants them sets the variable.
    environment.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if auth:
        _check_admin(environment)
        config = settings.home / "mlflow-auth.ini"
        database_uri = auth_database_uri or f"sqlite:///{settings.home / 'mlflow-auth.db'}"
        config.write_text(AUTH_CONFIG.format(database_uri=database_uri))
        environment["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
        # Flask signs its CSRF tokens with this key; it must outlive a restart and be the same
        # in every worker: generated once into the home unless given.
        environment.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", _kept_secret(settings.home))
        command += ["--app-name", "basic-auth"]
    console.print(
        f"MLflow tracking server on http://{host}:{port} (store: {backend}, artifacts: {artifacts}"
        f"{', credentials required' if auth else ''})"
    )
    os.execve(command[0], command, environment)


def _kept_secret(home: Path) -> str:
    path = home / "mlflow-flask-secret"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def _check_admin(environment: dict[str, str]) -> None:
    """Refuse --auth without an admin account, or with a guessable password (fail closed)."""
    if not environment.get("MLFLOW_AUTH_ADMIN_USERNAME"):
        fail("--auth needs MLFLOW_AUTH_ADMIN_USERNAME (the admin account; no default)")
    if len(environment.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")) < MIN_TOKEN_CHARS:
        fail(
            f"--auth needs MLFLOW_AUTH_ADMIN_PASSWORD of at least {MIN_TOKEN_CHARS} characters "
            "(no default)"
        )
