"""A real API process serving the champion of a real MLflow tracking server.

The champion moves to a new version (hot swap without a restart), then the registry goes
away and the API keeps serving the model it has, saying so on /ready.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sfmlops.adapters.db.engine import make_engine
from sfmlops.settings import Settings
from tests.support.cli_processes import AUTH, environment, start
from tests.support.model_registry import train_champion
from tests.support.network import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`sfmlops mlflow` on a free loopback port, with its own HOME (store and artifacts)."""
    port = free_port()
    sfmlops = str(Path(sys.executable).with_name("sfmlops"))
    process = subprocess.Popen(
        [sfmlops, "mlflow", "--port", str(port), "--workers", "1"],
        env=environment(tmp_path / "registry"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the server's workers go down with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{url}/health"), 120, "the MLflow server to start")
        yield url, process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session, with everything it started."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_the_tracking_server_starts_no_job_consumers(
    mlflow_server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    # MLflow's job execution (on by default) would add about eight Huey consumers of ~230 MiB
    # each; `sfmlops mlflow` turns it off, as the MLflow image does.
    _, process = mlflow_server
    commands = [" ".join(p.cmdline()) for p in psutil.Process(process.pid).children(recursive=True)]
    assert commands, "the server started no worker"
    assert not [command for command in commands if "huey" in command], commands


def test_hot_swap_then_registry_outage(
    home: Path, mlflow_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    registry_url, registry_process = mlflow_server
    settings = Settings(_env_file=None, home=home, mlflow_tracking_uri=registry_url)
    engine = make_engine(settings.effective_database_url)
    assert train_champion(settings, engine, range(1, 6)) == "1"
    api, url = start(
        home, settings={"mlflow_tracking_uri": registry_url, "model_poll_seconds": "0.5"}
    )
    try:
        first = httpx.get(f"{url}/v1/stores/1/forecast", headers=AUTH).json()
        unknown = httpx.get(f"{url}/v1/stores/6/forecast", headers=AUTH)

        # A training job on every store of the database takes the champion alias.
        assert train_champion(settings, engine, None) == "2"
        swapped = wait_until(
            lambda: _forecast_of(f"{url}/v1/stores/6/forecast"), 60, "version 2 to be served"
        )
        ready = httpx.get(f"{url}/ready").json()
        metrics = httpx.get(f"{url}/metrics").text

        stop_group(registry_process)
        degraded = wait_until(
            lambda: (r := httpx.get(f"{url}/ready")).json()["status"] == "degraded" and r,
            60,
            "/ready to report the registry outage",
        )
        during_outage = httpx.get(f"{url}/v1/stores/6/forecast", headers=AUTH, params={"days": 30})
    finally:
        api.terminate()
        api.wait(timeout=30)
        engine.dispose()

    assert first["model_version"] == "1"
    assert unknown.status_code == 404
    assert swapped["model_version"] == "2"
    assert ready == {"status": "ready", "reason": None, "model_version": "2"}
    info = {
        s.labels["version"]: s.value
        for f in text_string_to_metric_families(metrics)
        if f.name == "sfmlops_model_info"
        for s in f.samples
    }
    assert info == {"1": 0, "2": 1}
    assert degraded.status_code == 200
    assert degraded.json()["model_version"] == "2"
    assert "model registry unreachable" in degraded.json()["reason"]
    assert during_outage.status_code == 200
    assert during_outage.json()["model_version"] == "2"
    assert len(during_outage.json()["forecast"]) == 30


def _forecast_of(url: str) -> dict[str, Any] | None:
    response = httpx.get(url, headers=AUTH)
    return response.json() if response.status_code == 200 else None
