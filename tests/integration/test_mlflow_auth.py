"""`sfmlops mlflow --auth` (MLflow's basic-auth app): nothing is read or written without a user's
credentials; the training path registers and loads models with MLFLOW_TRACKING_* credentials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from sfmlops.adapters import mlflow_registry as registry
from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.cli import app
from sfmlops.services import loading
from sfmlops.services.model_training import champion_bundle
from sfmlops.settings import Settings
from tests.support.model_registry import train_champion
from tests.support.network import free_port
from tests.support.waiting import wait_for_http

pytestmark = pytest.mark.integration

ADMIN = "sfmlops-trainer"
PASSWORD = "p" * 20 + "-mlflow-admin-password"  # 42 characters
KEY = "s" * 40
SEARCH = "/api/2.0/mlflow/registered-models/search"
TIMEOUT = 120  # a loaded machine: each check hashes the password (PBKDF2)


def _environment(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SFMLOPS_", "MLFLOW_"))}
    return env | {"SFMLOPS_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"} | extra


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`sfmlops mlflow --auth` on a free loopback port, its admin from MLFLOW_AUTH_ADMIN_*."""
    home = tmp_path_factory.mktemp("mlflow-auth-home")
    port = free_port()
    env = _environment(home, MLFLOW_AUTH_ADMIN_USERNAME=ADMIN, MLFLOW_AUTH_ADMIN_PASSWORD=PASSWORD)
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "sfmlops", "mlflow", "--auth", "--port", str(port), "--workers=1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", process, home / "server.log")
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_nothing_is_read_or_written_without_credentials(server: str) -> None:
    create = f"{server}/api/2.0/mlflow/registered-models/create"

    anonymous = httpx.get(f"{server}{SEARCH}", timeout=TIMEOUT)
    wrong = httpx.get(f"{server}{SEARCH}", auth=(ADMIN, PASSWORD + "x"), timeout=TIMEOUT)
    anonymous_write = httpx.post(create, json={"name": "planted"}, timeout=TIMEOUT)
    admin = httpx.get(f"{server}{SEARCH}", auth=(ADMIN, PASSWORD), timeout=TIMEOUT)

    assert (anonymous.status_code, wrong.status_code, anonymous_write.status_code) == (
        401,
        401,
        401,
    )
    assert admin.status_code == 200
    names = [model["name"] for model in admin.json().get("registered_models", [])]
    assert "planted" not in names


def test_training_registers_and_loads_with_credentials_and_other_users_get_nothing(
    server: str, tmp_path: Path, rossmann_slice: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    settings = Settings(
        _env_file=None,
        home=tmp_path / "home",
        mlflow_tracking_uri=server,
        model_signing_key=SecretStr(KEY),
    )
    settings.ensure_home()
    engine = make_engine(settings.effective_database_url)
    migrate(engine)
    loading.load_folder(engine, rossmann_slice)
    # A user the admin created holds no permission until one is granted.
    created = httpx.post(
        f"{server}/api/2.0/mlflow/users/create",
        json={"username": "someone", "password": "q" * 40},
        auth=(ADMIN, PASSWORD),
        timeout=TIMEOUT,
    )
    assert created.status_code == 200, created.text

    version = train_champion(settings, engine, [1, 2])
    bundle = champion_bundle(settings)
    model = f"{server}/api/2.0/mlflow/registered-models/get"
    someone = httpx.get(
        model, params={"name": registry.MODEL_NAME}, auth=("someone", "q" * 40), timeout=TIMEOUT
    )
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(registry.RegistryUnavailableError, match="401"):
        champion_bundle(settings)
    engine.dispose()

    assert version == "1"
    assert bundle is not None
    assert someone.status_code == 403, someone.text


def test_the_server_refuses_to_start_open_or_with_a_weak_admin(tmp_path: Path) -> None:
    runner = CliRunner()

    def run(*arguments: str, **environment: str) -> Result:
        # The checks come before the server would start: in process, nothing is started.
        env = {"SFMLOPS_HOME": str(tmp_path), "MLFLOW_AUTH_ADMIN_USERNAME": None}
        env |= {"MLFLOW_AUTH_ADMIN_PASSWORD": None} | environment
        return runner.invoke(app, ["mlflow", *arguments], env=env)

    public = run("--host", "0.0.0.0", "--allowed-host", "mlflow")
    no_admin = run("--auth", MLFLOW_AUTH_ADMIN_PASSWORD=PASSWORD)
    weak = run("--auth", MLFLOW_AUTH_ADMIN_USERNAME=ADMIN, MLFLOW_AUTH_ADMIN_PASSWORD="admin")

    assert public.exit_code == 1
    assert "without --auth" in public.output
    assert no_admin.exit_code == 1
    assert "MLFLOW_AUTH_ADMIN_USERNAME" in no_admin.output
    assert weak.exit_code == 1
    assert "MLFLOW_AUTH_ADMIN_PASSWORD of at least 32 characters" in " ".join(weak.output.split())
