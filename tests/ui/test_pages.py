"""The dashboard's pages (Streamlit AppTest) against real API servers."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from sfmlops.core import columns
from sfmlops.ui.charts import DATE_COLUMN
from sfmlops.ui.retrain_feedback import RetrainWatch, SeriesSnapshot
from sfmlops.ui.views import store as store_page
from tests.support.cli_processes import TOKEN
from tests.support.dashboard_harness import (
    STORE_WITHOUT_SALES,
    TRAINED_STORES,
    UNTRAINED_STORE,
    RunningApi,
    api_get,
    expected_chart_table,
    open_dashboard,
)

pytestmark = pytest.mark.integration
OVERVIEW = "views/overview.py"
STORE = "views/store.py"
JOB_SECONDS = 180


def chart_table(app: AppTest) -> pd.DataFrame:
    (table,) = [table for table in app.table if DATE_COLUMN in table.value.columns]
    return table.value.reset_index(drop=True)


def texts(elements: Any) -> str:
    return "\n".join(str(element.value) for element in elements)


def chart_x_titles(app: AppTest) -> set[str]:
    return {
        json.loads(chart.proto.spec)["encoding"]["x"].get("title")
        for chart in app.get("vega_lite_chart")
    }


def metric(app: AppTest, label: str) -> str:
    (found,) = [m for m in app.metric if m.label == label]
    return str(found.value)


def test_the_store_chart_holds_the_apis_actuals_and_forecast(
    trained_api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(trained_api.url, monkeypatch, store="2")

    assert not app.exception
    (chart,) = app.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    assert spec["title"] == "Store 2 · total: last 8 weeks, next 14 days"
    assert len(spec["layer"]) == 5  # closed days, two bands, forecast, actuals
    expected = expected_chart_table(
        trained_api, 2, store_page.DEFAULT_HISTORY_WEEKS, store_page.DEFAULT_HORIZON_DAYS
    )
    pd.testing.assert_frame_equal(chart_table(app), expected)
    assert (expected[columns.OPEN] == "0").any(), "the slice should show closed days"
    champion = api_get(trained_api, "/v1/models/champion", store_id=2)
    assert metric(app, "Model version") == champion["version"]
    assert metric(app, "Backtest RMSPE, this store") == f"{champion['stores'][0]['rmspe']:.1%}"
    # The champion's one backtest window was fitted on 42 days, too few to calibrate
    # intervals on: its coverage is not measured, not 0 %.
    assert champion["metrics"]["coverage_80"] is None
    assert "All stores: RMSPE" in texts(app.caption)
    assert "interval coverage not measured" in texts(app.caption)


def test_the_model_panel_sets_realized_accuracy_beside_the_backtest(
    trained_api: RunningApi, scored_store: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(trained_api.url, monkeypatch, store=str(scored_store))

    assert not app.exception
    accuracy = api_get(trained_api, "/v1/accuracy", store_id=scored_store, days=28)
    assert accuracy["overall"]["days"] > 0
    assert metric(app, "Realized RMSPE, last 28 days") == f"{accuracy['overall']['rmspe']:.1%}"
    (by_version,) = [frame.value for frame in app.dataframe if "forecasts" in frame.value]
    assert by_version["model version"].tolist() == ["1"]
    assert by_version["forecasts"].tolist() == [accuracy["overall"]["days"]]


def test_the_picker_searches_id_type_and_state_and_follows_the_choice(
    trained_api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(trained_api.url, monkeypatch).switch_page(STORE).run()
    picker = app.selectbox(key=store_page.STORE_KEY)
    stores = api_get(trained_api, "/v1/stores")["stores"]

    assert picker.value is None
    assert "Type a store id" in picker.placeholder
    assert picker.options == [
        f"{s['store_id']} · type {s['store_type']} · {s['state']}" for s in stores
    ]
    assert not app.get("vega_lite_chart")

    picker.select(3).run()

    assert app.query_params[store_page.page_context.STORE_PARAM] == "3"
    expected = expected_chart_table(
        trained_api, 3, store_page.DEFAULT_HISTORY_WEEKS, store_page.DEFAULT_HORIZON_DAYS
    )
    pd.testing.assert_frame_equal(chart_table(app), expected)


def test_forecast_next_n_days_redraws_with_that_horizon_and_is_capped(
    trained_api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(trained_api.url, monkeypatch, store="1")
    horizon = app.number_input(key=store_page.HORIZON_INPUT_KEY)

    assert horizon.max == store_page.MAX_HORIZON_DAYS
    horizon.set_value(30)
    app.number_input(key=store_page.WEEKS_KEY).set_value(3)
    (submit,) = [b for b in app.button if b.label == "Forecast next N days"]
    submit.click().run()

    pd.testing.assert_frame_equal(chart_table(app), expected_chart_table(trained_api, 1, 3, 30))


def test_an_unknown_store_is_a_friendly_warning(
    trained_api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(trained_api.url, monkeypatch, store="99999")

    assert not app.exception
    assert "There is no store '99999'" in texts(app.warning)
    assert app.selectbox(key=store_page.STORE_KEY).value is None
    assert not app.get("vega_lite_chart")


def test_a_store_without_sales_says_so(
    trained_api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(trained_api.url, monkeypatch, store=str(STORE_WITHOUT_SALES))

    assert not app.exception
    assert f"Store {STORE_WITHOUT_SALES} has no sales yet" in texts(app.info)
    assert not app.get("vega_lite_chart")


def test_a_store_outside_the_champion_shows_its_sales_and_why_there_is_no_forecast(
    trained_api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(trained_api.url, monkeypatch, store=str(UNTRAINED_STORE))

    assert not app.exception
    assert "No forecast for this series" in texts(app.warning)
    assert f"unknown store {UNTRAINED_STORE}" in texts(app.warning)
    assert "Not in the champion model" in texts(app.info)
    (retrain,) = [b for b in app.button if b.label == "Retrain this store"]
    assert retrain.disabled
    table = chart_table(app)
    assert (table[columns.SALES] != "").all()
    assert (table[columns.YHAT] == "").all()


@pytest.mark.parametrize("page", [None, OVERVIEW])
def test_an_unreachable_api_is_a_clear_error_on_every_page(
    page: str | None, unreachable_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(unreachable_url, monkeypatch, store="1")
    if page:
        app.switch_page(page).run()

    assert not app.exception
    (error,) = app.error
    assert "The forecast API is not reachable" in error.value
    assert unreachable_url in error.value


def test_before_any_training_both_pages_say_there_is_no_model(
    untrained_api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(untrained_api.url, monkeypatch, store="1")

    assert not app.exception
    assert "No forecast yet" in texts(app.info)
    assert "No model trained yet" in texts(app.info)
    table = chart_table(app)
    assert len(table) == 7 * store_page.DEFAULT_HISTORY_WEEKS
    assert (table[columns.YHAT] == "").all()

    app.switch_page(OVERVIEW).run()

    assert not app.exception
    assert "No model trained yet" in texts(app.info)
    assert metric(app, "Serving model version") == "none"


def test_the_overview_ranks_stores_and_shows_freshness_and_jobs(
    trained_api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(trained_api.url, monkeypatch).switch_page(OVERVIEW).run()

    assert not app.exception
    champion = api_get(trained_api, "/v1/models/champion")
    status = api_get(trained_api, "/v1/status")
    assert metric(app, "Latest sales date") == status["latest_sales_date"]
    assert metric(app, "Stores") == f"{status['stores']:,}"
    assert metric(app, "Dead letters, last 24 h") == f"{status['dead_letters_last_day']:,}"
    assert metric(app, "Serving model version") == champion["version"]
    # The RMSPE spread and the champion mix (a third, the realized accuracy by week, once
    # forecasts are scored).
    assert {"backtest RMSPE", "series"} <= chart_x_titles(app)
    worst = sorted(
        (s for s in champion["stores"] if s["rmspe"] is not None),
        key=lambda s: -s["rmspe"],
    )
    links = app.get("page_link")
    assert [link.proto.label for link in links] == [f"Store {s['store_id']}" for s in worst]
    assert {(link.proto.page, link.proto.external) for link in links} == {("store", False)}
    assert links[0].proto.query_string == f"store={worst[0]['store_id']}"
    assert {s["store_id"] for s in worst} == set(TRAINED_STORES)
    # Four stores within a few points of each other: the axis is not clipped.
    assert "beyond, in the last bar" not in texts(app.caption)


def test_the_overview_shows_realized_accuracy_by_day_and_the_stale_stores(
    trained_api: RunningApi, scored_store: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(trained_api.url, monkeypatch).switch_page(OVERVIEW).run()

    assert not app.exception
    accuracy = api_get(trained_api, "/v1/accuracy", days=28)
    assert metric(app, "Realized RMSPE, last 28 days") == f"{accuracy['overall']['rmspe']:.1%}"
    (by_day,) = [frame.value for frame in app.dataframe if "day" in frame.value]
    assert by_day["forecasts"].tolist() == [day["days"] for day in accuracy["by_day"]]
    (weekly,) = [
        chart.proto
        for chart in app.get("vega_lite_chart")
        if json.loads(chart.proto.spec)["encoding"]["x"].get("title") == "week starting"
    ]
    (dataset,) = weekly.datasets
    weeks = pa.ipc.open_stream(dataset.data.data).read_pandas()
    history = api_get(trained_api, "/v1/accuracy", days=7 * 26)
    assert weeks["forecasts"].sum() == history["overall"]["days"] > 0
    stale = api_get(trained_api, "/v1/accuracy/stale-stores")
    assert stale["stores"] == []  # one store scored: its own miss is the fleet's
    assert f"No stale store on the evenings up to {stale['end']}." in texts(app.caption)


def test_a_failed_training_job_shows_its_error(
    trained_api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another client (a DAG, say) retrains a store that never sold anything: the job fails.
    job = httpx.post(
        f"{trained_api.url}/v1/training-jobs",
        json={"stores": [STORE_WITHOUT_SALES]},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    ).json()
    job = wait_for_job(trained_api, job["id"])
    assert job["status"] == "failed"
    assert job["error"]

    app = open_dashboard(trained_api.url, monkeypatch).switch_page(OVERVIEW).run()
    assert f"The latest training job ({job['id'][:12]}) failed" in texts(app.error)
    assert job["error"] in texts(app.error)

    app = open_dashboard(trained_api.url, monkeypatch, store="1")
    app.session_state[store_page.WATCH_KEY] = RetrainWatch(
        job["id"],
        STORE_WITHOUT_SALES,
        columns.DEFAULT_PRODUCT,
        SeriesSnapshot(version=None),
        submitted_at=dt.datetime.now(dt.UTC),
    )
    app.run()
    assert f"job {job['id'][:12]}) failed" in texts(app.error)
    assert job["error"] in texts(app.error)


def wait_for_job(api: RunningApi, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_SECONDS
    while time.monotonic() < deadline:
        job: dict[str, Any] = api_get(api, f"/v1/training-jobs/{job_id}")
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {JOB_SECONDS} s")


def test_a_store_with_several_products_gets_a_product_picker(
    trained_api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_of = dt.date.fromisoformat(api_get(trained_api, "/v1/status")["as_of"])
    days = [as_of - dt.timedelta(days=back) for back in range(5)]
    records = [
        {columns.STORE_ID: 4, columns.PRODUCT_ID: "cosmetics", columns.SALES_DATE: day.isoformat(), columns.SALES: 100 + i,
         columns.OPEN: 1, columns.PROMO: 0, columns.STATE_HOLIDAY: "0", columns.SCHOOL_HOLIDAY: 0}
        for i, day in enumerate(days)
    ]  # fmt: skip
    stored = httpx.post(
        f"{trained_api.url}/v1/sales",
        json={"records": records},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    ).json()
    assert stored["accepted"] == len(records)

    app = open_dashboard(trained_api.url, monkeypatch, store="4")
    product = app.selectbox(key=store_page.PRODUCT_KEY)
    assert sorted(product.options) == ["cosmetics", columns.DEFAULT_PRODUCT]
    assert product.value == columns.DEFAULT_PRODUCT

    product.select("cosmetics").run()

    assert not app.exception
    assert app.query_params[store_page.page_context.PRODUCT_PARAM] == "cosmetics"
    table = chart_table(app)
    shown = table[table[columns.SALES] != ""]
    assert dict(zip(shown[DATE_COLUMN], shown[columns.SALES], strict=True)) == {
        record[columns.SALES_DATE]: f"{record[columns.SALES]:.2f}" for record in records
    }
    assert "store 4 has no product 'cosmetics' in the champion model" in texts(app.warning)


def test_a_single_product_store_has_no_product_picker(
    trained_api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(trained_api.url, monkeypatch, store="3")

    assert not [box for box in app.selectbox if box.key == store_page.PRODUCT_KEY]


@pytest.mark.usefixtures("training_jobs_run")
def test_a_retrain_with_prophet_chosen_makes_it_the_store_s_model(
    trained_api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(trained_api.url, monkeypatch, store="3")
    (models,) = [box for box in app.multiselect if box.key == store_page.MODELS_KEY]
    assert models.options == ["gbm", "prophet", "seasonal_naive"]
    assert models.value == []  # the champion's own models unless a user chooses

    models.select("prophet").run()
    next(b for b in app.button if b.label == "Retrain this store").click().run()

    watch = app.session_state[store_page.WATCH_KEY]
    deadline = time.monotonic() + JOB_SECONDS
    while not app.success and time.monotonic() < deadline:
        assert not app.error, texts(app.error)
        time.sleep(1)
        app.run()
    job = api_get(trained_api, f"/v1/training-jobs/{watch.job_id}")
    assert job["status"] == "succeeded", job["error"]
    # Prophet was the only model named: the champion (seasonal_naive only) got it for store 3.
    (series,) = api_get(trained_api, "/v1/models/champion", store_id=3)["stores"]
    assert series["model"] == "prophet"
    assert series["rmspe_by_model"]["prophet"] is not None


@pytest.mark.usefixtures("training_jobs_run")
def test_retrain_shows_progress_then_redraws_with_the_new_version(
    trained_api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_dashboard(trained_api.url, monkeypatch, store="2")
    before = int(metric(app, "Model version"))
    (series_before,) = api_get(trained_api, "/v1/models/champion", store_id=2)["stores"]
    week_before = api_get(trained_api, "/v1/stores/2/forecast", days=7)["forecast"]
    (retrain,) = [b for b in app.button if b.label == "Retrain this store"]

    retrain.click().run()

    watch = app.session_state[store_page.WATCH_KEY]
    assert watch.store_id == 2
    assert watch.previous_version == str(before)
    assert watch.before.backtest_rmspe == series_before["rmspe"]
    assert watch.before.week_total == pytest.approx(sum(day["yhat"] for day in week_before))
    # Just submitted, the job is queued or running: the page follows it with a progress bar
    # and its steps, above everything else the page draws.
    (progress,) = app.get("progress")
    assert progress.proto.text.startswith(f"Retraining store 2 (job {watch.job_id[:12]})")
    assert f"Job {watch.job_id[:12]} submitted" in texts(app.markdown)
    assert next(b for b in app.button if b.label == "Retrain this store").disabled
    deadline = time.monotonic() + JOB_SECONDS
    while not app.success and time.monotonic() < deadline:
        assert not app.error, texts(app.error)
        time.sleep(1)
        app.run()  # what the progress fragment's timer does in a browser

    job = api_get(trained_api, f"/v1/training-jobs/{watch.job_id}")
    assert job["status"] == "succeeded"
    assert texts(app.success) == (
        f"Store 2 retrained: model version {job['model_version']} is live (was {before})."
    )
    assert int(metric(app, "Model version")) == int(job["model_version"]) > before
    assert store_page.WATCH_KEY not in app.session_state
    (series_after,) = api_get(trained_api, "/v1/models/champion", store_id=2)["stores"]
    week_after = api_get(trained_api, "/v1/stores/2/forecast", days=7)["forecast"]
    (comparison,) = [table for table in app.table if "before" in table.value.columns]
    shown = comparison.value
    assert list(shown.loc["Model version"]) == [str(before), job["model_version"], ""]
    assert list(shown.loc["Backtest RMSPE", ["before", "after"]]) == [
        f"{series_before['rmspe']:.1%}",
        f"{series_after['rmspe']:.1%}",
    ]
    week = next(label for label in shown.index if label.startswith("Forecast, next 7 days"))
    assert list(shown.loc[week, ["before", "after"]]) == [
        f"{sum(day['yhat'] for day in week_before):,.0f}",
        f"{sum(day['yhat'] for day in week_after):,.0f}",
    ]
    assert not next(b for b in app.button if b.label == "Retrain this store").disabled
    pd.testing.assert_frame_equal(
        chart_table(app),
        expected_chart_table(
            trained_api, 2, store_page.DEFAULT_HISTORY_WEEKS, store_page.DEFAULT_HORIZON_DAYS
        ),
    )
