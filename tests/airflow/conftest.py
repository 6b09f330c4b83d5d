"""Fixtures of the DAG tests: an Airflow home with a migrated metadata database, DAG runs
in processes of their own, and the real `sfmlops` command the tasks drive.

These tests run with .venv-airflow's Python (make test-airflow), where sfmlops is not
installed: sfmlops is reached only as a command (SFMLOPS_CLI), as the DAGs reach it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "images" / "airflow" / "dags"
HERE = Path(__file__).resolve().parent
PYTHON = sys.executable

# Short waits so failure paths finish in seconds; the DAGs' real defaults are tested apart.
FAST_TASKS = {
    "SFMLOPS_TASK_RETRIES": "2",
    "SFMLOPS_RETRY_DELAY_SECONDS": "1",
    "SFMLOPS_MAX_RETRY_DELAY_SECONDS": "2",
    "SFMLOPS_TRAINING_POKE_SECONDS": "1",
    "SFMLOPS_TRAINING_TIMEOUT_SECONDS": "180",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    The same as tests/conftest.py's, which this suite cannot import (it needs sfmlops).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_environment() -> dict[str, str]:
    """This process's environment without Airflow or sfmlops settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SFMLOPS_"))}


def airflow_environment(home: Path, database: str | None = None) -> dict[str, str]:
    """Settings of an Airflow process using `home`, the repo's DAG folder and no examples."""
    return clean_environment() | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database or f"sqlite:///{home / 'airflow.db'}",
    }


@pytest.fixture(scope="session")
def sfmlops_cli() -> str:
    """The sfmlops command (SFMLOPS_CLI, set by make; else the repo's .venv)."""
    command = os.environ.get("SFMLOPS_CLI") or str(ROOT / ".venv" / "bin" / "sfmlops")
    if not Path(command.split()[0]).exists():
        pytest.fail(f"the sfmlops command {command!r} does not exist: run `make dev` first")
    return command


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow home with a migrated SQLite metadata database, shared by the session."""
    home = tmp_path_factory.mktemp("airflow-home")
    subprocess.run(
        [str(Path(PYTHON).with_name("airflow")), "db", "migrate"],
        env=airflow_environment(home),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return home


DagRunner = Callable[..., dict[str, Any]]


@pytest.fixture
def run_dag(airflow_home: Path, sfmlops_cli: str) -> DagRunner:
    """Run a DAG with dag.test() in a new process; returns its outcome (run_dag.py)."""

    def run(
        dag_id: str,
        conf: dict[str, Any] | None = None,
        mark_success: str = "",
        **environment: str,
    ) -> dict[str, Any]:
        env = airflow_environment(airflow_home) | FAST_TASKS | {"SFMLOPS_CLI": sfmlops_cli}
        env |= environment
        done = subprocess.run(
            [PYTHON, str(HERE / "run_dag.py"), dag_id, json.dumps(conf or {}), mark_success],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            raise AssertionError(
                f"dag.test() gave no result:\n{done.stdout[-5000:]}\n{done.stderr[-5000:]}"
            )
        result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
        result["log"] = done.stdout + done.stderr
        if result["last_failure"]:
            result["last_failure"] = json.loads(result["last_failure"])
        return result

    return run


def sfmlops(command: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the sfmlops command with its home and database in `home`."""
    return subprocess.run(
        [*command.split(), *args],
        env=sfmlops_environment(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


API_TOKEN = "dag-tests-token-not-a-secret-0123456789"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}  # every endpoint but the probes needs it


def sfmlops_environment(home: Path) -> dict[str, str]:
    return clean_environment() | {
        "SFMLOPS_HOME": str(home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
    }


@pytest.fixture
def sfmlops_api(tmp_path: Path, sfmlops_cli: str) -> Iterator[tuple[str, Path]]:
    """A real `sfmlops serve` (writes need API_TOKEN) with an empty database: (url, home)."""
    home = tmp_path / "sfmlops"
    sfmlops(sfmlops_cli, home, "init")
    with running_api(sfmlops_cli, home, tmp_path / "serve.log") as url:
        yield url, home


@contextmanager
def running_api(sfmlops_cli: str, home: Path, log_path: Path, **environment: str) -> Iterator[str]:
    """`sfmlops serve` on a free port with its home in `home`; yields its URL."""
    port = free_port()
    log = log_path.open("wb")
    process = subprocess.Popen(
        [*sfmlops_cli.split(), "serve", "--port", str(port)],
        env=sfmlops_environment(home) | {"SFMLOPS_API_TOKEN": API_TOKEN} | environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise AssertionError(log_path.read_text())
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
