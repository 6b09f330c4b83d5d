"""The dashboard's tests: real API servers it talks to, and the app run by Streamlit's AppTest."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from sfmlops.cli.dashboard import APP
from sfmlops.core import columns
from sfmlops.ui.charts import CHART_COLUMNS, DATE_COLUMN
from tests.support.cli_processes import TOKEN

TRAINED_STORES = (1, 2, 3, 4)
UNTRAINED_STORE = 10  # has sales, but is not in the champion
STORE_WITHOUT_SALES = 21
APP_TIMEOUT_SECONDS = 60
SERVICE_START_SECONDS = 120


@dataclass(frozen=True)
class RunningApi:
    """An API server a test session started: its URL and home folder."""

    url: str
    home: Path


def start_service(
    command: list[str], env: dict[str, str], health_url: str, log: Path
) -> subprocess.Popen[bytes]:
    """Start a server process and wait until `health_url` answers 200."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + SERVICE_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{command[1:3]} exited early:\n{log.read_text()}")
        try:
            if httpx.get(health_url, timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise AssertionError(f"{command[1:3]} did not start:\n{log.read_text()}")


def stop_service(process: subprocess.Popen[bytes]) -> None:
    """Stop a server process, killing it when it does not stop within 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def sfmlops_command(*arguments: str) -> list[str]:
    """The command line running this environment's `sfmlops` with `arguments`."""
    return [str(Path(sys.executable).with_name("sfmlops")), *arguments]


def open_dashboard(api_url: str, monkeypatch: pytest.MonkeyPatch, **query: str) -> AppTest:
    """The dashboard app talking to `api_url`, run once: on the overview, or on the store
    page when `query` has a store."""
    monkeypatch.setenv("SFMLOPS_API_URL", api_url)
    monkeypatch.setenv("SFMLOPS_API_TOKEN", TOKEN)
    app = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_SECONDS)
    app.query_params.update(query)
    return app.run()


def api_get(api: RunningApi, path: str, **params: Any) -> Any:
    """GET `path` from the API; returns the decoded JSON body (raises on an error status)."""
    response = httpx.get(
        f"{api.url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def expected_chart_table(
    api: RunningApi, store_id: int, weeks: int, days: int, model_version: str | None = None
) -> pd.DataFrame:
    """What the chart must show, read straight from the API: actuals, then the forecast.

    With `model_version` (the version the page says drew its forecast), the API's forecast
    must be that version's: one taken at another champion compares different models.
    """
    as_of = dt.date.fromisoformat(api_get(api, "/v1/status")["as_of"])
    start = as_of - dt.timedelta(days=7 * weeks - 1)
    sales = api_get(api, f"/v1/stores/{store_id}/sales", start=start, end=as_of)["days"]
    served = api_get(api, f"/v1/stores/{store_id}/forecast", days=days)
    if model_version is not None:
        assert served["model_version"] == model_version, (
            f"the API serves version {served['model_version']}, the page's forecast is "
            f"version {model_version}'s"
        )
    forecast = served["forecast"]
    blank = dict.fromkeys(CHART_COLUMNS, "")
    rows = [
        blank
        | {
            DATE_COLUMN: day["sales_date"],
            columns.SALES: f"{day['sales']:.2f}",
            columns.OPEN: str(day["open"]),
        }
        for day in sales
    ] + [
        blank
        | {DATE_COLUMN: day["date"]}
        | {name: f"{day[name]:.2f}" for name in columns.FORECAST_VALUES}
        for day in forecast
    ]
    return pd.DataFrame(rows, columns=list(CHART_COLUMNS))


NO_TRAINING_JOBS = (
    "`sfmlops train` has no --job-id in this checkout (the training-job runner is not merged "
    "yet): a retrain cannot complete here"
)
