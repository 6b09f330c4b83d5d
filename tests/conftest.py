"""Shared fixtures: real databases (SQLite and a throwaway PostgreSQL) and data slices."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.adapters.mlflow_client_env import serving_client_env_names
from sfmlops.datasets import ROSSMANN_DIR
from tests.support import ROOT
from tests.support.killable_postgres import KillablePostgres, killable_postgres
from tests.support.network import free_port
from tests.support.waiting import wait_for_http

# The DAG tests import Airflow, which lives in .venv-airflow: `make test-airflow` runs them.
collect_ignore = ["airflow"]
# The Compose stack's tests need its images built first: `make compose-test` runs them.
if not os.environ.get("SFMLOPS_COMPOSE_TEST"):
    collect_ignore.append("compose")
# The cluster tier builds and runs a Kubernetes cluster (root): `make cluster-test` runs it.
if not os.environ.get("SFMLOPS_CLUSTER_TEST"):
    collect_ignore.append("cluster")

# The one marker axis: every test is in exactly one tier (pyproject.toml says what each needs).
TIERS = ("unit", "integration", "e2e", "deploy", "containers", "cluster")
# A test in one of these folders is in that tier unless it is marked with another one.
FOLDER_TIERS = {"unit": "unit", "integration": "integration", "e2e": "e2e", "deploy": "deploy"}
# The files that take longest, longest first, run first: `make test`'s workers take whole files
# in collection order (--dist loadfile --no-loadscope-reorder), and a long file handed out late
# ends the suite with one worker busy and the other idle. test_stream.py alone is a fifth to a
# third of the suite's time on one worker (its tests each start Spark several times).
LONGEST_FIRST = (
    "streaming/test_stream.py",
    "streaming/test_stream_metrics.py",
    "streaming/test_demo_kafka.py",
    "e2e/test_soak.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each test its tier from its folder, and refuse a test in no tier or in two; put the
    longest files first."""
    for item in items:
        marked = [tier for tier in TIERS if item.get_closest_marker(tier)]
        folder = Path(item.path).relative_to(ROOT / "tests").parts[0]
        if not marked and folder in FOLDER_TIERS:
            item.add_marker(FOLDER_TIERS[folder])
            marked = [FOLDER_TIERS[folder]]
        if len(marked) != 1:
            raise pytest.UsageError(
                f"{item.nodeid}: mark the test with exactly one tier of {', '.join(TIERS)} "
                f"(it has {', '.join(marked) or 'none'})"
            )
    first = {path: rank for rank, path in enumerate(LONGEST_FIRST)}
    if moved := [path for path in first if not (ROOT / "tests" / path).is_file()]:
        raise pytest.UsageError(f"LONGEST_FIRST names files that are gone: {', '.join(moved)}")
    items.sort(  # stable: the order inside a file and among the others stays
        key=lambda item: first.get(Path(item.path).relative_to(ROOT / "tests").as_posix(), 99)
    )


@pytest.fixture(autouse=True)
def _no_server_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with MLflow's client defaults, as a fresh process does.

    An API started in-process by an earlier test of this worker gave MLflow's client a 10 s
    timeout without retries, process-wide (`mlflow_client_env`); a training run in-process
    afterwards must not inherit it (a job process never does).
    """
    for name in serving_client_env_names(os.environ):
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server for this test session.

    SFMLOPS_TEST_POSTGRES_URL points at an existing server; otherwise a throwaway cluster
    from Debian's package is started on a free port and removed afterwards.
    """
    existing = os.environ.get("SFMLOPS_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    parent = Path(tempfile.mkdtemp(prefix="sfmlops-pg-"))
    parent.chmod(0o755)  # the cluster runs as "postgres" when the tests run as root
    cluster = parent / "cluster"
    script = ROOT / "scripts" / "postgres.sh"
    url = subprocess.run(
        [str(script), "start", str(cluster), str(free_port())],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        yield url
    finally:
        subprocess.run([str(script), "stop", str(cluster)], check=False)
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def own_postgres() -> Iterator[KillablePostgres]:
    """A PostgreSQL cluster of the test's own, which it may kill and restart."""
    with killable_postgres(free_port()) as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sfmlops.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated, empty database on each backend in turn."""
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def rossmann_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled data cut to 20 stores and the last 90 days, in the Rossmann layout."""
    folder = tmp_path_factory.mktemp("rossmann-slice")
    stores = pd.read_csv(ROSSMANN_DIR / "store.csv", dtype=str, keep_default_na=False)
    states = pd.read_csv(ROSSMANN_DIR / "store_states.csv", dtype=str, keep_default_na=False)
    keep = {str(store) for store in range(1, 21)}
    stores[stores["Store"].isin(keep)].to_csv(folder / "store.csv", index=False)
    states[states["Store"].isin(keep)].to_csv(folder / "store_states.csv", index=False)
    sales = pd.read_csv(ROSSMANN_DIR / "train.csv.gz", dtype=str, keep_default_na=False)
    recent = sales["Date"] >= "2015-03-16"
    with gzip.open(folder / "train.csv.gz", "wt") as out:
        sales[sales["Store"].isin(keep) & recent].to_csv(out, index=False)
    return folder


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (via `sfmlops mlflow`) on a free loopback port; yields its URL.

    One per test module: the registered model and its aliases are global to a server.
    """
    home = tmp_path_factory.mktemp("mlflow-home")
    port = free_port()
    env = os.environ | {"SFMLOPS_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("SFMLOPS_MLFLOW_TRACKING_URI", None)
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "sfmlops", "mlflow", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", server, home / "server.log")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
