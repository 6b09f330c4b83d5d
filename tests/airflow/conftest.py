"""Fixtures of the DAG tests: an Airflow home with a migrated metadata database, DAG runs
in processes of their own, and the real `sfmlops` command the tasks drive.

These tests run with .venv-airflow's Python (make test-airflow), where sfmlops is not
installed: sfmlops is reached only as a command (SFMLOPS_CLI), as the DAGs reach it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dag_support import (
    FAST_TASKS,
    HERE,
    PYTHON,
    ROOT,
    DagRunner,
    airflow_environment,
    running_api,
    sfmlops,
)


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


@pytest.fixture
def sfmlops_api(tmp_path: Path, sfmlops_cli: str) -> Iterator[tuple[str, Path]]:
    """A real `sfmlops serve` (writes need API_TOKEN) with an empty database: (url, home)."""
    home = tmp_path / "sfmlops"
    sfmlops(sfmlops_cli, home, "init")
    with running_api(sfmlops_cli, home, tmp_path / "serve.log") as url:
        yield url, home
