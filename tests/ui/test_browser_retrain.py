"""A retrain from the store page in a real browser, against an API with its default poll.

The API here polls the registry every 30 s when no training job runs (the default), as a
user's does: the new version must still show within seconds of the job's end. Screenshots
go to test-artifacts/.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page

from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.services import loading
from sfmlops.settings import Settings
from tests.support.browser import ARTIFACTS, metric_value, start_retrain, wait_for_chart
from tests.support.cli_processes import environment
from tests.support.dashboard_harness import (
    TRAINED_STORES,
    RunningApi,
    api_get,
    sfmlops_command,
    start_service,
    stop_service,
)
from tests.support.model_registry import train_champion
from tests.support.network import free_port

pytestmark = pytest.mark.e2e
STORE = 3
JOB_SECONDS = 240  # the training job itself, on a busy machine
# From the job's recorded end to the page saying its version is live: the API catches up at
# once (the job route) or within its 2 s training poll, and the page asks every second. The
# API's idle poll alone was 30 s.
SHOWN_AFTER_JOB_SECONDS = 10


@pytest.fixture(scope="module")
def default_poll_api(
    tmp_path_factory: pytest.TempPathFactory, rossmann_slice: Path
) -> Iterator[RunningApi]:
    """An API with every setting at its default (the 30 s champion poll), champion of 1-4."""
    home = tmp_path_factory.mktemp("retrain") / "home"
    settings = Settings(_env_file=None, home=home)
    settings.ensure_home()
    engine = make_engine(settings.effective_database_url)
    try:
        migrate(engine)
        loading.load_folder(engine, rossmann_slice)
        train_champion(settings, engine, TRAINED_STORES)
    finally:
        engine.dispose()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_service(
        sfmlops_command("serve", "--port", str(port)),
        environment(home),
        f"{url}/health",
        home / "api.log",
    )
    yield RunningApi(url, home)
    stop_service(process)


@pytest.fixture(scope="module")
def retrain_dashboard_url(default_poll_api: RunningApi) -> Iterator[str]:
    port = free_port()
    process = start_service(
        sfmlops_command("ui", "--port", str(port)),
        environment(default_poll_api.home, api_url=default_poll_api.url),
        f"http://127.0.0.1:{port}/_stcore/health",
        default_poll_api.home / "ui.log",
    )
    yield f"http://127.0.0.1:{port}/"
    stop_service(process)


def shown_table(table: Locator) -> dict[str, list[str]]:
    """A `st.table` as the page shows it: each row's label and its cells."""
    table.locator("tbody tr").first.wait_for()
    return {
        cells[0]: cells[1:]
        for row in table.locator("tbody tr").all()
        for cells in [[cell.strip() for cell in row.locator("th, td").all_inner_texts()]]
    }


def test_a_retrain_is_followed_at_the_top_then_compared_before_and_after(
    page: Page,
    retrain_dashboard_url: str,
    default_poll_api: RunningApi,
    training_jobs_run: None,
) -> None:
    page.goto(f"{retrain_dashboard_url}store?store={STORE}")
    chart = wait_for_chart(page, STORE)
    before = metric_value(page, "Model version")
    (series_before,) = api_get(default_poll_api, "/v1/models/champion", store_id=STORE)["stores"]
    week_before = api_get(default_poll_api, f"/v1/stores/{STORE}/forecast", days=7)["forecast"]

    # At once, above the chart and as wide as the page: the job's progress and its steps.
    progress = start_retrain(page)
    page.get_by_text(re.compile(r"Job [0-9a-f]{12} submitted")).first.wait_for()
    status_box, chart_box = progress.bounding_box(), chart.bounding_box()
    picker_box = page.get_by_test_id("stSelectbox").first.bounding_box()
    assert status_box is not None
    assert chart_box is not None
    assert picker_box is not None
    assert status_box["y"] + status_box["height"] <= chart_box["y"]
    # As wide as the store picker, which spans the page (a border's padding apart).
    assert status_box["width"] == pytest.approx(picker_box["width"], abs=40)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-store-retrain-progress.png")

    news = page.get_by_text(re.compile(rf"^Store {STORE} retrained: model version \d+ is live"))
    news.wait_for(timeout=JOB_SECONDS * 1000)
    shown_at = dt.datetime.now(dt.UTC)
    (job,) = api_get(default_poll_api, "/v1/training-jobs", limit=1)["jobs"]
    finished_at = dt.datetime.fromisoformat(job["finished_at"])
    assert job["status"] == "succeeded"
    assert (shown_at - finished_at).total_seconds() < SHOWN_AFTER_JOB_SECONDS
    after = job["model_version"]
    assert int(after) > int(before)
    assert news.inner_text().strip() == (
        f"Store {STORE} retrained: model version {after} is live (was {before})."
    )
    (series_after,) = api_get(default_poll_api, "/v1/models/champion", store_id=STORE)["stores"]
    week_after = api_get(default_poll_api, f"/v1/stores/{STORE}/forecast", days=7)["forecast"]
    comparison = shown_table(page.get_by_test_id("stTable").filter(has_text="Backtest RMSPE"))
    assert comparison["Model version"] == [before, after, ""]
    assert comparison["Backtest RMSPE"][:2] == [
        f"{series_before['rmspe']:.1%}",
        f"{series_after['rmspe']:.1%}",
    ]
    (week,) = [label for label in comparison if label.startswith("Forecast, next 7 days")]
    assert comparison[week][:2] == [
        f"{sum(day['yhat'] for day in week_before):,.0f}",
        f"{sum(day['yhat'] for day in week_after):,.0f}",
    ]
    # The page redrew with the new version: the model panel says so, under the summary.
    deadline = time.monotonic() + 30
    while metric_value(page, "Model version") != after and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric_value(page, "Model version") == after
    summary_box, chart_box = news.bounding_box(), wait_for_chart(page, STORE).bounding_box()
    assert summary_box is not None
    assert chart_box is not None
    assert summary_box["y"] < chart_box["y"]
    page.screenshot(path=ARTIFACTS / "dashboard-store-retrain-summary.png")
