"""The dashboard in a real browser: Debian's Chromium driven by Playwright.

`sfmlops ui` runs under a base URL path, as behind an ingress, against a real API with a
trained champion. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import Browser, Locator, Page, Route, expect, sync_playwright

from sfmlops.core import columns
from sfmlops.ui.charts import CHART_COLUMNS
from sfmlops.ui.views import store as store_page
from tests.support import ROOT
from tests.support.dashboard import (
    NO_TRAINING_JOBS,
    TOKEN,
    RunningApi,
    api_get,
    expected_chart_table,
    service_environment,
    sfmlops_command,
    start_service,
    stop_service,
)
from tests.support.network import free_port

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
BASE_PATH = "dashboard"
PAGE_MS = 90_000  # the first page of a fresh dashboard process imports pandas and Altair
RETRAIN_SECONDS = 240


@pytest.fixture(scope="module")
def dashboard_url(trained_api: RunningApi) -> Iterator[str]:
    """`sfmlops ui` under /dashboard, talking to the trained API."""
    port = free_port()
    process = start_service(
        sfmlops_command("ui", "--port", str(port)),
        service_environment(trained_api.home, api_url=trained_api.url, ui_base_path=BASE_PATH),
        f"http://127.0.0.1:{port}/{BASE_PATH}/_stcore/health",
        trained_api.home / "ui.log",
    )
    yield f"http://127.0.0.1:{port}/{BASE_PATH}/"
    stop_service(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: scripts/install-system-deps.sh installs Chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    context.set_default_timeout(PAGE_MS)
    yield context.new_page()
    context.close()


def pick_store(page: Page, store_id: int) -> None:
    """Search the picker the way a planner does: type, then choose the match."""
    picker = page.get_by_role("combobox", name="Store")
    picker.click()
    picker.fill(str(store_id))
    page.get_by_role("option", name=re.compile(rf"^{store_id} · ")).click()


def metric_value(page: Page, label: str) -> str:
    metric = page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
    )
    return metric.get_by_test_id("stMetricValue").inner_text().strip()


def chart_data(page: Page) -> pd.DataFrame:
    """The "Chart data" table as the page shows it."""
    expander = page.get_by_test_id("stExpander").filter(has_text="Chart data")
    expander.get_by_text("Chart data").click()
    table = expander.get_by_test_id("stTable").locator("table")
    # all_inner_texts() does not wait: on a busy machine the opened expander renders later.
    table.locator("tbody tr").first.wait_for()
    header = [cell.strip() for cell in table.locator("thead th").all_inner_texts()]
    rows = [
        [cell.strip() for cell in row.locator("th, td").all_inner_texts()]
        for row in table.locator("tbody tr").all()
    ]
    columns = header[-len(CHART_COLUMNS) :]  # drop the index column
    frame = pd.DataFrame([row[-len(CHART_COLUMNS) :] for row in rows], columns=columns)
    expander.get_by_text("Chart data").click()
    return frame


def drawn_marks(chart: Locator, mark: str) -> int:
    """How many marks of a Vega mark type (symbol, rect, area, line) the SVG holds."""
    return chart.locator(f"svg g.mark-{mark}.role-mark > path").count()  # not the legend


def wait_for_chart(page: Page, store_id: int) -> Locator:
    chart = page.get_by_test_id("stVegaLiteChart")
    chart.get_by_text(re.compile(rf"^Store {store_id} · ")).wait_for()
    chart.locator("svg g.mark-symbol.role-mark > path").first.wait_for()
    return chart


def test_the_store_page_draws_the_apis_actuals_and_forecast_and_retrains(
    page: Page,
    dashboard_url: str,
    trained_api: RunningApi,
    training_jobs_available: bool,
) -> None:
    page.goto(dashboard_url)
    pick_store(page, 3)
    chart = wait_for_chart(page, 3)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-store.png", full_page=True)

    expected = expected_chart_table(
        trained_api, 3, store_page.DEFAULT_HISTORY_WEEKS, store_page.DEFAULT_HORIZON_DAYS
    )
    pd.testing.assert_frame_equal(chart_data(page), expected)
    closed = (expected[columns.OPEN] == "0") | (expected[columns.YHAT_UPPER_95] == "0.00")
    # A point per day open (or forecast to sell), a grey column per day closed, two bands.
    assert closed.any()
    assert drawn_marks(chart, "symbol") == int((~closed).sum())
    assert drawn_marks(chart, "rect") == int(closed.sum())
    assert drawn_marks(chart, "area") == 2
    assert re.search(r"[?&]store=3\b", page.url)
    champion = api_get(trained_api, "/v1/models/champion", store_id=3)
    before = metric_value(page, "Model version")
    assert before == champion["version"]

    if not training_jobs_available:
        pytest.skip(NO_TRAINING_JOBS)
    page.get_by_role("button", name="Retrain this store").click()
    page.get_by_test_id("stProgress").or_(page.get_by_text("finished: version")).first.wait_for()
    news = page.get_by_text(re.compile(r"^Store 3 retrained: model version \d+ is live"))
    news.wait_for(timeout=RETRAIN_SECONDS * 1000)
    deadline = time.monotonic() + 30
    while metric_value(page, "Model version") == before and time.monotonic() < deadline:
        time.sleep(0.5)
    after = metric_value(page, "Model version")
    assert int(after) > int(before)
    assert api_get(trained_api, "/v1/models/champion", store_id=3)["version"] == after
    wait_for_chart(page, 3)
    pd.testing.assert_frame_equal(chart_data(page), expected_chart_table(
        trained_api, 3, store_page.DEFAULT_HISTORY_WEEKS, store_page.DEFAULT_HORIZON_DAYS
    ))  # fmt: skip
    page.screenshot(path=ARTIFACTS / "dashboard-store-retrained.png", full_page=True)


def test_the_store_page_shows_realized_accuracy_beside_the_backtest(
    page: Page, dashboard_url: str, trained_api: RunningApi, scored_store: int
) -> None:
    page.goto(dashboard_url)
    pick_store(page, scored_store)
    wait_for_chart(page, scored_store)
    label = "Realized RMSPE, last 28 days"
    page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True).wait_for()

    accuracy = api_get(trained_api, "/v1/accuracy", store_id=scored_store, days=28)
    assert metric_value(page, label) == f"{accuracy['overall']['rmspe']:.1%}"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-store-realized.png", full_page=True)


def test_the_overview_links_the_least_accurate_store_to_its_page(
    page: Page, dashboard_url: str, trained_api: RunningApi
) -> None:
    champion = api_get(trained_api, "/v1/models/champion")
    worst = max((s for s in champion["stores"] if s["rmspe"] is not None), key=lambda s: s["rmspe"])
    # From a store page, as a planner would: the link must win over the store shown before.
    others = [s["store_id"] for s in champion["stores"] if s["store_id"] != worst["store_id"]]
    page.goto(f"{dashboard_url}?store={others[0]}")
    wait_for_chart(page, others[0])
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Overview").click()
    page.get_by_text("Champion mix").wait_for()
    links = page.get_by_role("link", name=re.compile(r"^Store \d+$"))

    links.first.click()

    wait_for_chart(page, worst["store_id"])
    assert re.search(rf"[?&]store={worst['store_id']}\b", page.url)
    assert (
        page.get_by_role("combobox", name="Store")
        .input_value()
        .startswith(f"{worst['store_id']} · ")
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-overview-click-through.png", full_page=True)


def test_the_api_docs_render_with_no_network(browser: Browser, untrained_api: RunningApi) -> None:
    """/docs loads Swagger UI from the API itself: every request elsewhere is refused here."""
    context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {TOKEN}"})
    context.set_default_timeout(PAGE_MS)
    elsewhere: list[str] = []

    def only_the_api(route: Route) -> None:
        if route.request.url.startswith(f"{untrained_api.url}/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_api)
    try:
        page = context.new_page()
        page.goto(f"{untrained_api.url}/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("sfmlops forecast API")
        operations = page.locator(".opblock-summary-path")
        expect(operations.filter(has_text=re.compile(r"^/v1/stores$"))).to_have_count(1)
        assert elsewhere == []
        page.goto(f"{untrained_api.url}/redoc")
        expect(page.locator("h1").first).to_contain_text("sfmlops forecast API")
    finally:
        context.close()
    # ReDoc's "powered by" badge is the one image it links to its vendor's site.
    assert [url for url in elsewhere if not url.endswith("/redoc/logo-mini.svg")] == []
