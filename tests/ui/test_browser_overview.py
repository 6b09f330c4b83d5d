"""The dashboard's landing page in a real browser: the overview, with the API's figures.

Uses the `dashboard_url`, `browser` and `page` fixtures of conftest.py; screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page

from sfmlops.ui.charts import weekly_accuracy
from sfmlops.ui.responses import Accuracy
from sfmlops.ui.views import overview
from tests.support.browser import ARTIFACTS, drawn_marks, metric_value, wait_for_chart
from tests.support.dashboard_harness import RunningApi, api_get

pytestmark = pytest.mark.e2e


def chart_titled(page: Page, axis_title: str) -> Locator:
    """The Vega-Lite chart whose SVG shows `axis_title`."""
    return page.get_by_test_id("stVegaLiteChart").filter(
        has=page.locator("svg text", has_text=re.compile(rf"^{re.escape(axis_title)}$"))
    )


def test_the_dashboard_opens_on_the_overview_with_the_apis_figures(
    page: Page, dashboard_url: str, trained_api: RunningApi, scored_store: int
) -> None:
    page.goto(dashboard_url)
    page.get_by_role("heading", name="Overview").wait_for()
    histogram = chart_titled(page, "backtest RMSPE")
    histogram.locator("svg g.mark-rect.role-mark > path").first.wait_for()
    realized = chart_titled(page, "week starting")
    realized.locator("svg g.mark-symbol.role-mark > path").first.wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    # Streamlit scrolls inside its own container: a tall window shows the whole page.
    page.set_viewport_size({"width": 1400, "height": 2800})
    page.screenshot(path=ARTIFACTS / "dashboard-landing-overview.png", full_page=True)

    status = api_get(trained_api, "/v1/status")
    champion = api_get(trained_api, "/v1/models/champion")
    assert metric_value(page, "Latest sales date") == status["latest_sales_date"]
    assert metric_value(page, "Stores") == f"{status['stores']:,}"
    assert metric_value(page, "Serving model version") == champion["version"]
    accuracy = api_get(trained_api, "/v1/accuracy", days=overview.REALIZED_DAYS)
    label = f"Realized RMSPE, last {overview.REALIZED_DAYS} days"
    assert metric_value(page, label) == f"{accuracy['overall']['rmspe']:.1%}"
    for heading in ("Accuracy", "Realized accuracy", "Training jobs", "Champion mix"):
        assert page.get_by_role("heading", name=heading, exact=True).is_visible()
    # The realized accuracy chart: a point per week scored for RMSPE and one for MAPE.
    history = Accuracy.model_validate(
        api_get(trained_api, "/v1/accuracy", days=7 * overview.REALIZED_HISTORY_WEEKS)
    )
    weeks = weekly_accuracy(history.by_day)
    assert len(weeks) > 0
    assert drawn_marks(realized, "symbol") == 2 * len(weeks)
    # The histogram: a bar per band holding a series.
    assert drawn_marks(histogram, "rect") >= 2


def test_a_store_link_to_the_root_still_opens_that_store(page: Page, dashboard_url: str) -> None:
    page.goto(f"{dashboard_url}?store=3")

    wait_for_chart(page, 3)
    assert re.search(r"/store\?(.*&)?store=3\b", page.url)
