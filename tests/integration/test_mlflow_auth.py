"""MLflow's basic-auth app with sfmlops's users: nothing is read or written without credentials,
training registers as the writer, the API's reader loads the champion and is refused every write
by the server itself (403); the users are made by the chart's and Compose's own script
(sfmlops-helm/files/mlflow-users.py), idempotently, and follow a rotated password."""

from __future__ import annotations

import io
import os
import runpy
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
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
from tests.support.deploy import CHART
from tests.support.model_registry import train_champion
from tests.support.network import free_port
from tests.support.waiting import wait_for_http

pytestmark = pytest.mark.integration

USERS_SCRIPT = CHART / "files" / "mlflow-users.py"
ADMIN = "sfmlops-admin"
PASSWORD = "p" * 20 + "-mlflow-admin-password"  # 42 characters
WRITER = ("sfmlops-writer", "w" * 40)
READER = ("sfmlops-reader", "r" * 40)
KEY = "s" * 40
SEARCH = "/api/2.0/mlflow/registered-models/search"
TIMEOUT = 120  # a loaded machine: each check hashes the password (PBKDF2)


def _environment(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SFMLOPS_", "MLFLOW_"))}
    return env | {"SFMLOPS_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"} | extra


def _make_users(home: Path, reader_password: str = READER[1]) -> tuple[int, str, str]:
    """The users script, as the MLflow container runs it, against the server's auth store:
    (exit status, stdout, stderr). In process (runpy): MLflow is imported here already, a
    subprocess would spend most of its time importing it again."""
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(home / "mlflow-auth.ini"),
        # `sfmlops mlflow`'s default tracking store, the server's.
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
        "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
        "SFMLOPS_MLFLOW_WRITER_USERNAME": WRITER[0],
        "SFMLOPS_MLFLOW_WRITER_PASSWORD": WRITER[1],
        "SFMLOPS_MLFLOW_READER_USERNAME": READER[0],
        "SFMLOPS_MLFLOW_READER_PASSWORD": reader_password,
    }
    out, err = io.StringIO(), io.StringIO()
    status = 0
    with pytest.MonkeyPatch.context() as environment, redirect_stdout(out), redirect_stderr(err):
        for name, value in env.items():
            environment.setenv(name, value)
        try:
            runpy.run_path(str(USERS_SCRIPT), run_name="__main__")
        except SystemExit as stop:
            status = int(stop.code or 0)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`sfmlops mlflow --auth` on a free loopback port with sfmlops's users; (URL, its home)."""
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
        status, _, errors = _make_users(home)
        assert status == 0, errors
        yield url, home
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_nothing_is_read_or_written_without_credentials(server: tuple[str, Path]) -> None:
    url, _ = server
    create = f"{url}/api/2.0/mlflow/registered-models/create"

    anonymous = httpx.get(f"{url}{SEARCH}", timeout=TIMEOUT)
    wrong = httpx.get(f"{url}{SEARCH}", auth=(ADMIN, PASSWORD + "x"), timeout=TIMEOUT)
    anonymous_write = httpx.post(create, json={"name": "planted"}, timeout=TIMEOUT)
    admin = httpx.get(f"{url}{SEARCH}", auth=(ADMIN, PASSWORD), timeout=TIMEOUT)

    assert (anonymous.status_code, wrong.status_code, anonymous_write.status_code) == (
        401,
        401,
        401,
    )
    assert admin.status_code == 200
    names = [model["name"] for model in admin.json().get("registered_models", [])]
    assert "planted" not in names


def _settings(home: Path, url: str) -> Settings:
    settings = Settings(
        _env_file=None, home=home, mlflow_tracking_uri=url, model_signing_key=SecretStr(KEY)
    )
    settings.ensure_home()
    return settings


def test_training_registers_as_the_writer_and_the_reader_loads_but_cannot_write(
    server: tuple[str, Path], tmp_path: Path, rossmann_slice: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", WRITER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", WRITER[1])
    settings = _settings(tmp_path / "trainer", url)
    engine = make_engine(settings.effective_database_url)
    migrate(engine)
    loading.load_folder(engine, rossmann_slice)
    version = train_champion(settings, engine, [1, 2])
    engine.dispose()
    experiment = registry.connect(settings).get_experiment_by_name(registry.EXPERIMENT_NAME)
    assert experiment is not None

    # The API's view: its own home (nothing cached), the reader's credentials.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", READER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", READER[1])
    loaded_version, bundle = champion_bundle(_settings(tmp_path / "api", url))
    api = "/api/2.0/mlflow"
    writes = {
        "move the champion alias": (
            f"{api}/registered-models/alias",
            {"name": registry.MODEL_NAME, "alias": "champion", "version": version},
        ),
        "register a version": (
            f"{api}/model-versions/create",
            {"name": registry.MODEL_NAME, "source": f"models:/{registry.MODEL_NAME}/{version}"},
        ),
        "delete the model": (f"{api}/registered-models/delete", {"name": registry.MODEL_NAME}),
        "log a run": (f"{api}/runs/create", {"experiment_id": experiment.experiment_id}),
    }
    refused = {
        what: httpx.request(
            "DELETE" if what == "delete the model" else "POST",
            f"{url}{path}",
            json=body,
            auth=READER,
            timeout=TIMEOUT,
        ).status_code
        for what, (path, body) in writes.items()
    }
    # A user the admin creates holds nothing until granted (default_permission NO_PERMISSIONS).
    created = httpx.post(
        f"{url}{api}/users/create",
        json={"username": "someone", "password": "q" * 40},
        auth=(ADMIN, PASSWORD),
        timeout=TIMEOUT,
    )
    model = f"{url}{api}/registered-models/get"
    someone = httpx.get(
        model, params={"name": registry.MODEL_NAME}, auth=("someone", "q" * 40), timeout=TIMEOUT
    )
    champion_now = httpx.get(
        f"{url}{api}/registered-models/alias",
        params={"name": registry.MODEL_NAME, "alias": "champion"},
        auth=READER,
        timeout=TIMEOUT,
    )

    assert version == "1"
    assert loaded_version == version
    assert bundle.series
    assert refused == dict.fromkeys(writes, 403)
    assert created.status_code == 200, created.text
    assert someone.status_code == 403, someone.text
    assert champion_now.json()["model_version"]["version"] == version


def test_the_names_sfmlops_uses_exist_before_anyone_could_take_them(
    server: tuple[str, Path],
) -> None:
    # The script ran before any training: the experiment and the model are there, owned by no
    # user, so the reader cannot create them and become their MANAGEr (delete, move aliases).
    url, home = server
    api = f"{url}/api/2.0/mlflow"
    experiment = httpx.get(
        f"{api}/experiments/get-by-name",
        params={"experiment_name": registry.EXPERIMENT_NAME},
        auth=(ADMIN, PASSWORD),
        timeout=TIMEOUT,
    ).json()["experiment"]
    take_experiment = httpx.post(
        f"{api}/experiments/create",
        json={"name": registry.EXPERIMENT_NAME},
        auth=READER,
        timeout=TIMEOUT,
    )
    take_model = httpx.post(
        f"{api}/registered-models/create",
        json={"name": registry.MODEL_NAME},
        auth=READER,
        timeout=TIMEOUT,
    )
    # A name nobody uses is still the reader's to create (MLflow without workspaces), and it
    # manages it until the next start of the server, whose script revokes that grant.
    scratch = httpx.post(
        f"{api}/registered-models/create", json={"name": "scratch"}, auth=READER, timeout=TIMEOUT
    )
    described_before = httpx.patch(
        f"{api}/registered-models/update",
        json={"name": "scratch", "description": "mine"},
        auth=READER,
        timeout=TIMEOUT,
    )
    rerun = _make_users(home)
    described_after = httpx.patch(
        f"{api}/registered-models/update",
        json={"name": "scratch", "description": "still mine?"},
        auth=READER,
        timeout=TIMEOUT,
    )

    assert experiment["artifact_location"] == f"mlflow-artifacts:/{experiment['experiment_id']}"
    assert experiment["lifecycle_stage"] == "active"
    assert take_experiment.json()["error_code"] == "RESOURCE_ALREADY_EXISTS", take_experiment.text
    assert take_model.json()["error_code"] == "RESOURCE_ALREADY_EXISTS", take_model.text
    assert (scratch.status_code, described_before.status_code) == (200, 200), scratch.text
    assert rerun == (
        0,
        f"mlflow-users: user {READER[0]}: MANAGE on registered_model scratch revoked\n",
        "",
    )
    assert described_after.status_code == 403, described_after.text


def test_the_users_script_is_idempotent_follows_a_rotated_password_and_fails_closed(
    server: tuple[str, Path],
) -> None:
    url, home = server
    search = f"{url}{SEARCH}"

    # A second run with one password changed: that password is set, nothing else is touched.
    rotated = _make_users(home, reader_password="n" * 40)
    old = httpx.get(search, auth=READER, timeout=TIMEOUT).status_code
    new = httpx.get(search, auth=(READER[0], "n" * 40), timeout=TIMEOUT).status_code
    weak = _make_users(home, reader_password="short")
    back = _make_users(home)

    assert rotated == (0, f"mlflow-users: user {READER[0]}: password set\n", "")
    assert (old, new) == (401, 200)
    assert weak[0] == 1
    assert "SFMLOPS_MLFLOW_READER_PASSWORD needs at least 32 characters" in weak[2]
    assert back[0] == 0, back[2]


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
