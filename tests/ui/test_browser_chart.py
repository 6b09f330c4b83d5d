"""The store chart in a real browser: its tooltip, its data as CSV, and no request leaving
the machine (the `dashboard_url`, `browser` and `page` fixtures of conftest.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from urllib.parse import urlsplit

import pandas as pd
import pytest
from playwright.sync_api import Page, expect

from sfmlops.ui.charts import BANDS_NOTE, CHART_COLUMNS
from sfmlops.ui.views import store as store_page
from tests.support.browser import BASE_PATH, PAGE_MS, pick_store, wait_for_chart
from tests.support.cli_processes import environment
from tests.support.dashboard_harness import (
    RunningApi,
    api_get,
    expected_chart_table,
    sfmlops_command,
    start_service,
    stop_service,
)
from tests.support.network import free_port, slow_proxy

pytestmark = pytest.mark.e2e
STORE_ID = 2


def test_a_forecast_points_tooltip_gives_the_apis_intervals_as_ranges(
    page: Page, dashboard_url: str, trained_api: RunningApi
) -> None:
    page.goto(f"{dashboard_url}store")
    pick_store(page, STORE_ID)
    chart = wait_for_chart(page, STORE_ID)
    forecast = api_get(
        trained_api, f"/v1/stores/{STORE_ID}/forecast", days=store_page.DEFAULT_HORIZON_DAYS
    )["forecast"]
    by_day = {dt.date.fromisoformat(day["date"]): day for day in forecast}

    # The forecast's points are the first layer of points (the actuals' are drawn on top).
    chart.locator("svg g.mark-symbol.role-mark").first.locator("> path").last.hover()
    tooltip = page.locator("#vg-tooltip-element")
    tooltip.get_by_text("80 % range").wait_for()
    rows = dict(
        zip(
            tooltip.locator("td.key").all_inner_texts(),
            tooltip.locator("td.value").all_inner_texts(),
            strict=True,
        )
    )

    day = by_day[dt.datetime.strptime(rows["day"], "%a %d %b %Y").date()]
    assert rows["80 % range"] == f"{day['yhat_lower']:,.0f} \N{EN DASH} {day['yhat_upper']:,.0f}"
    assert (
        rows["95 % range"] == f"{day['yhat_lower_95']:,.0f} \N{EN DASH} {day['yhat_upper_95']:,.0f}"
    )
    assert rows["forecast"] == f"{day['yhat']:,.0f}"
    assert not {"80 % low", "80 % high"} & set(rows)
    assert page.get_by_text(BANDS_NOTE).is_visible()


def test_download_csv_gives_the_charts_days_as_the_api_serves_them(
    page: Page, dashboard_url: str, trained_api: RunningApi
) -> None:
    page.goto(f"{dashboard_url}store")
    pick_store(page, STORE_ID)
    wait_for_chart(page, STORE_ID)

    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()

    assert download.value.suggested_filename == f"store-{STORE_ID}-total.csv"
    csv = pd.read_csv(download.value.path(), dtype=str, keep_default_na=False)
    expected = expected_chart_table(
        trained_api, STORE_ID, store_page.DEFAULT_HISTORY_WEEKS, store_page.DEFAULT_HORIZON_DAYS
    )
    assert list(csv.columns) == list(CHART_COLUMNS)
    assert len(csv) == len(expected) == 7 * store_page.DEFAULT_HISTORY_WEEKS + 14
    pd.testing.assert_frame_equal(csv, expected)


def test_the_dashboard_asks_nothing_of_the_internet(page: Page, dashboard_url: str) -> None:
    """Every request of both pages, icons and fonts included, goes to the dashboard itself."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(f"{dashboard_url}store")
    pick_store(page, STORE_ID)
    wait_for_chart(page, STORE_ID)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Overview").click()
    page.get_by_text("Champion mix").wait_for()
    page.wait_for_load_state("networkidle")

    local = {"127.0.0.1", "localhost"}
    elsewhere = sorted({url for url in requested if urlsplit(url).hostname not in local})
    assert not elsewhere
    assert any(urlsplit(url).path.endswith(".woff2") for url in requested)  # fonts: local
    assert any("/media/" in url and url.endswith(".png") for url in requested)  # favicon


FORECAST_DELAY_SECONDS = 4.0


@pytest.fixture
def slow_forecast_dashboard_url(trained_api: RunningApi) -> Iterator[str]:
    """A dashboard whose API takes `FORECAST_DELAY_SECONDS` longer to answer a forecast."""
    with slow_proxy(trained_api.url, "/forecast", FORECAST_DELAY_SECONDS) as api_url:
        port = free_port()
        process = start_service(
            sfmlops_command("ui", "--port", str(port)),
            environment(trained_api.home, api_url=api_url, ui_base_path=BASE_PATH),
            f"http://127.0.0.1:{port}/{BASE_PATH}/_stcore/health",
            trained_api.home / "ui-slow-forecast.log",
        )
        yield f"http://127.0.0.1:{port}/{BASE_PATH}/"
        stop_service(process)


def test_a_spinner_shows_while_the_chart_loads(
    page: Page, slow_forecast_dashboard_url: str
) -> None:
    page.goto(f"{slow_forecast_dashboard_url}store")
    pick_store(page, STORE_ID)

    spinner = page.get_by_test_id("stSpinner")
    expect(spinner).to_contain_text(
        f"Loading store {STORE_ID}'s sales and forecast", timeout=PAGE_MS
    )
    assert page.get_by_test_id("stVegaLiteChart").count() == 0
    wait_for_chart(page, STORE_ID)
    expect(spinner).to_have_count(0)
