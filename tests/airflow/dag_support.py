"""Helpers of the DAG tests (tests/airflow), shared by their fixtures and modules.

These tests run with .venv-airflow's Python (make test-airflow), where sfmlops is not
installed: sfmlops is reached only as a command (SFMLOPS_CLI), as the DAGs reach it.
"""

from __future__ import annotations

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

    The same as tests.support's, which this suite cannot import (it needs sfmlops).
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


DagRunner = Callable[..., dict[str, Any]]


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
