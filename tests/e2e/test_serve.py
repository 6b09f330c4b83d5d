"""`sfmlops serve` as a real server process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli_processes import AUTH, TOKEN, start
from tests.support.network import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(home: Path) -> Iterator[str]:
    process, url = start(home)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_a_real_server_answers_and_logs_json(home: Path) -> None:
    process, url = start(home)
    try:
        store = httpx.get(f"{url}/v1/stores/1", headers=AUTH).json()
        missing = httpx.get(f"{url}/v1/stores/99999", headers=AUTH)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert store["store_id"] == 1
    assert missing.status_code == 404
    json_lines = [line for line in output.splitlines() if line.startswith("{")]
    assert any(
        '"logger": "uvicorn.access"' in line and "/v1/stores/99999" in line for line in json_lines
    )


def test_workers_share_their_metrics(home: Path) -> None:
    process, url = start(home, "--workers", "2")
    try:
        record = {"store_id": 1, "sales_date": "2015-06-14", "sales": 1, "open": 1, "promo": 0,
                  "state_holiday": "0", "school_holiday": 0}  # fmt: skip
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for _ in range(12):
            with httpx.Client() as fresh:  # new connections, so both workers take requests
                assert (
                    fresh.post(
                        f"{url}/v1/sales", json={"records": [record]}, headers=headers
                    ).status_code
                    == 200
                )
        text = httpx.get(f"{url}/metrics").text
    finally:
        process.terminate()
        process.wait(timeout=30)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    ingested = sum(
        s.value for s in families["sfmlops_sales_ingested"].samples if s.name.endswith("_total")
    )
    assert ingested == 12


def test_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFMLOPS_")} | {
        "SFMLOPS_HOME": str(tmp_path)
    }
    command = [
        str(Path(sys.executable).with_name("sfmlops")),
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
    ]

    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 1
    assert "without SFMLOPS_API_TOKEN" in result.stderr


def _sfmlops(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFMLOPS_")} | {
        "SFMLOPS_HOME": str(tmp_path)
    }
    env |= {f"SFMLOPS_{name.upper()}": value for name, value in settings.items()}
    command = [str(Path(sys.executable).with_name("sfmlops")), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("token", ["", "too-short-a-token"])
def test_an_empty_or_short_token_stops_every_command(tmp_path: Path, token: str) -> None:
    # Fail closed: an empty Secret key must not start a server with open endpoints.
    served = _sfmlops(tmp_path, "serve", "--host", "0.0.0.0", "--port", str(free_port()),
                      api_token=token)  # fmt: skip
    shown = _sfmlops(tmp_path, "config", api_token=token)

    for result in (served, shown):
        assert result.returncode == 1
        assert "invalid configuration: SFMLOPS_API_TOKEN" in result.stderr
    assert "fewer than the 32 required" in shown.stderr or "is empty" in shown.stderr


def test_the_dashboard_refuses_a_public_address_without_a_password(tmp_path: Path) -> None:
    result = _sfmlops(tmp_path, "ui", "--host", "0.0.0.0", "--port", str(free_port()))

    assert result.returncode == 1
    assert "without SFMLOPS_UI_PASSWORD" in result.stderr
