"""Driving the dashboard in a real browser: Debian's Chromium through Playwright.

The `browser`, `page` and `dashboard_url` fixtures live in tests/ui/conftest.py; these are
the constants they use and the ways a test reads the store page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NoReturn

import pandas as pd
from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from sfmlops.ui.charts import CHART_COLUMNS
from tests.support import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
"""Where browser tests put their screenshots."""
BASE_PATH = "dashboard"
"""The URL path `sfmlops ui` runs under in the browser tests, as behind an ingress."""
PAGE_MS = 90_000  # the first page of a fresh dashboard process imports pandas and Altair


def pick_store(page: Page, store_id: int) -> None:
    """Search the picker the way a planner does: type, then choose the match."""
    picker = page.get_by_role("combobox", name="Store")
    picker.click()
    picker.fill(str(store_id))
    page.get_by_role("option", name=re.compile(rf"^{store_id} · ")).click()


def metric_value(page: Page, label: str) -> str:
    """The value shown by the metric labelled `label`."""
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


def forecast_version(page: Page, version: str | None = None) -> str:
    """The model version the store chart's caption says drew its forecast, once the page's
    script run is over; with `version`, once it says that version.

    Waiting for the caption alone is not enough right after a retrain: Streamlit keeps the
    previous run's elements on the page (marked stale) until the new run replaces them, so
    the chart and its data table below the caption could still be the old version's.
    """
    number = re.escape(version) if version is not None else r"\d+"
    note = page.get_by_text(re.compile(rf"Forecast by model version {number} from ")).first
    note.wait_for()
    # Every element drawn by the run that wrote the caption (none left from the run before).
    stale = page.locator("[data-testid='stElementContainer'][data-stale='true']")
    expect(stale).to_have_count(0, timeout=PAGE_MS)
    found = re.search(r"Forecast by model version (\d+) from ", note.inner_text())
    assert found is not None
    return found.group(1)


def wait_for_chart(page: Page, store_id: int) -> Locator:
    """The store's chart, once its title and first point are drawn."""
    chart = page.get_by_test_id("stVegaLiteChart")
    chart.get_by_text(re.compile(rf"^Store {store_id} · ")).wait_for()
    chart.locator("svg g.mark-symbol.role-mark > path").first.wait_for()
    return chart


def start_retrain(page: Page, timeout_ms: float = PAGE_MS) -> Locator:
    """Click "Retrain this store" and return the job's progress once the page shows it.

    The button's callback submits the job before the page redraws, so the progress (or, for a
    job already done, its "finished" line) comes with the next page; a refused submission
    shows its error instead. Either failure ends the test with what the page said and a
    screenshot, rather than a bare timeout.
    """
    # A click that lands while the script reruns (the store's query parameter was just set) hits
    # a button about to be replaced and is lost: click only once the page is idle.
    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden(timeout=PAGE_MS)
    stale = page.locator("[data-testid='stElementContainer'][data-stale='true']")
    expect(stale).to_have_count(0, timeout=PAGE_MS)
    page.get_by_role("button", name="Retrain this store").click()
    progress = page.get_by_test_id("stProgress").or_(page.get_by_text("finished: version"))
    refused = page.get_by_text("Could not start the retrain")
    try:
        progress.or_(refused).first.wait_for(timeout=timeout_ms)
    except PlaywrightTimeoutError:
        _fail_with_page(page, f"no retrain progress {timeout_ms / 1000:.0f} s after the click")
    if refused.count():
        _fail_with_page(page, refused.first.inner_text())
    return progress.first


def _fail_with_page(page: Page, why: str) -> NoReturn:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-retrain-not-started.png", full_page=True)
    alerts = [text.strip() for text in page.get_by_role("alert").all_inner_texts()]
    raise AssertionError(f"{why}; the page's alerts: {alerts or 'none'}")
