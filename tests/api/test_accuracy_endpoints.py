"""Forecasts the API serves are kept as issued, scored when actuals are posted, and reported.

The API serves champion version 1 (seasonal naive, stores 1-5 of the slice); its data ends on
2015-06-13, so its default horizon is 2015-06-14 .. 2015-06-20, issued on 2015-06-14.
"""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from sfmlops.adapters.db import issued_forecasts as records
from sfmlops.adapters.db import training_job_records
from sfmlops.core import columns
from sfmlops.services.api import create_app
from sfmlops.settings import Settings

pytestmark = pytest.mark.integration

ISSUE_DATE = dt.date(2015, 6, 14)


def day_record(store_id: int, day: dt.date, sales: float) -> dict[str, object]:
    return {
        columns.STORE_ID: store_id,
        columns.SALES_DATE: day.isoformat(),
        columns.SALES: sales,
        columns.CUSTOMERS: 100,
        columns.OPEN: 1,
        columns.PROMO: 0,
        columns.STATE_HOLIDAY: "0",
        columns.SCHOOL_HOLIDAY: 0,
    }


def test_the_default_horizon_is_kept_as_issued(served: TestClient, sqlite_engine: Engine) -> None:
    champion = served.get("/v1/models/champion").json()
    with sqlite_engine.connect() as connection:
        kept = records.read_issued(connection, 2, ISSUE_DATE, ISSUE_DATE + dt.timedelta(days=6))
    served_days = served.get("/v1/stores/2/forecast").json()["forecast"]

    assert kept[records.MODEL_VERSION].unique().tolist() == ["1"]
    assert kept[records.ISSUE_DATE].dt.date.unique().tolist() == [ISSUE_DATE]
    assert kept[columns.HORIZON_DAYS].tolist() == list(range(1, 8))
    assert kept[columns.YHAT].tolist() == pytest.approx([day[columns.YHAT] for day in served_days])
    backtest = next(s["rmspe"] for s in champion["stores"] if s[columns.STORE_ID] == 2)
    assert kept[records.BACKTEST_RMSPE].tolist() == pytest.approx([backtest] * 7)


def test_posted_actuals_are_scored_and_reported(served: TestClient, auth: dict[str, str]) -> None:
    forecast = {
        store: served.get(f"/v1/stores/{store}/forecast").json()["forecast"] for store in (1, 2)
    }
    # Store 1 sells 25 % above its forecast on Monday and Tuesday (the first day, a Sunday, it
    # is closed); store 2 exactly as forecast on Monday.
    records_ = [
        day_record(
            1, ISSUE_DATE + dt.timedelta(days=offset), forecast[1][offset][columns.YHAT] * 1.25
        )
        for offset in (1, 2)
    ] + [day_record(2, ISSUE_DATE + dt.timedelta(days=1), forecast[2][1][columns.YHAT])]
    response = served.post("/v1/sales", json={"records": records_}, headers=auth)
    assert response.status_code == 200, response.text

    everything = served.get("/v1/accuracy", params={"days": 7}).json()
    store_1 = served.get("/v1/accuracy", params={"days": 7, "store_id": 1}).json()

    # The as-of date moved to the newest posted day.
    assert (everything["start"], everything["end"]) == ("2015-06-10", "2015-06-16")
    assert everything["overall"]["days"] == 3
    assert store_1["overall"]["rmspe"] == pytest.approx(0.2, abs=1e-3)  # 0.25 / 1.25
    assert store_1["overall"]["bias"] < 0
    by_store = {row["store_id"]: row for row in everything["by_store"]}
    assert by_store[2]["rmspe"] == pytest.approx(0.0, abs=1e-3)
    assert [row["horizon_days"] for row in everything["by_horizon"]] == [2, 3]
    assert [row["model_version"] for row in everything["by_version"]] == ["1"]
    assert [row["date"] for row in everything["by_day"]] == ["2015-06-15", "2015-06-16"]


def test_accuracy_before_anything_is_scored_and_bad_queries(served: TestClient) -> None:
    empty = served.get("/v1/accuracy").json()
    assert empty["overall"] == {
        "rmspe": None,
        "mape": None,
        "bias": None,
        "coverage_80": None,
        "coverage_95": None,
        "days": 0,
    }
    assert empty["by_store"] == []
    assert served.get("/v1/accuracy", params={"days": 0}).status_code == 422
    assert served.get("/v1/accuracy", params={"days": 367}).status_code == 422
    # Found by the schemathesis run: a window before year 1 was a 500 (OverflowError).
    before_year_one = served.get("/v1/accuracy", params={"days": 128, "end": "0001-01-01"})
    assert before_year_one.status_code == 422
    assert "would start before 0001-01-01" in before_year_one.text


def metric_samples(client: TestClient, auth: dict[str, str]) -> dict[tuple[str, str], float]:
    """(name, labels as text) -> value of every sample on /metrics."""
    text = client.get("/metrics", headers=auth).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return samples


def test_metrics_show_realized_accuracy_freshness_and_training_outcomes(
    served: TestClient, auth: dict[str, str], sqlite_engine: Engine
) -> None:
    monday = ISSUE_DATE + dt.timedelta(days=1)
    forecast = {
        store: served.get(f"/v1/stores/{store}/forecast", headers=auth).json()["forecast"]
        for store in (1, 2)
    }
    # Monday to Thursday (the 4 scored days a store's week needs), store 1 misses by 0.2 of
    # its actual (sells 1.25x the forecast), store 2 not at all.
    batch = [
        record
        for offset in range(4)
        for record in (
            day_record(
                1, monday + dt.timedelta(days=offset), forecast[1][1 + offset][columns.YHAT] * 1.25
            ),
            day_record(
                2, monday + dt.timedelta(days=offset), forecast[2][1 + offset][columns.YHAT]
            ),
        )
    ]
    assert served.post("/v1/sales", json={"records": batch}, headers=auth).status_code == 200
    finished = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with sqlite_engine.begin() as connection:
        training_job_records.create_training_job(connection, "job-full", "local", None)
        training_job_records.update_training_job(
            connection, "job-full", status="failed", finished_at=finished
        )
        training_job_records.create_training_job(connection, "job-store", "local", [1])
        training_job_records.update_training_job(
            connection, "job-store", status="succeeded", finished_at=finished
        )

    samples = metric_samples(served, auth)

    backtest = {
        s[columns.STORE_ID]: s["rmspe"]
        for s in served.get("/v1/models/champion", headers=auth).json()["stores"]
    }
    assert samples[("sfmlops_store_realized_rmspe", "store_id=1")] == pytest.approx(0.2, abs=1e-3)
    assert samples[("sfmlops_store_backtest_rmspe", "store_id=1")] == pytest.approx(backtest[1])
    # The baseline: the backtest times the fleet's median realized/backtest ratio, at least 1.
    fleet = max(1.0, (0.2 / backtest[1] + 0.0) / 2)
    assert samples[("sfmlops_store_baseline_rmspe", "store_id=1")] == pytest.approx(
        backtest[1] * fleet
    )
    assert samples[("sfmlops_store_realized_rmspe", "store_id=2")] == pytest.approx(0.0, abs=1e-3)
    assert samples[("sfmlops_realized_rmspe", "")] == pytest.approx((0.2**2 / 2) ** 0.5, abs=1e-3)
    assert ("sfmlops_realized_interval_coverage", "interval=80") in samples
    assert 0 <= samples[("sfmlops_actuals_age_seconds", "")] < 600
    assert samples[
        ("sfmlops_training_last_finished_timestamp_seconds", "scope=full,status=failed")
    ] == pytest.approx(finished.timestamp())
    assert (
        "sfmlops_training_last_finished_timestamp_seconds",
        "scope=single-store,status=succeeded",
    ) in samples


def test_only_the_worst_stores_get_a_series(
    served_settings: Settings, sqlite_engine: Engine, auth: dict[str, str]
) -> None:
    settings = served_settings.model_copy(update={"metrics_worst_stores": 1})
    with TestClient(create_app(settings, engine=sqlite_engine)) as client:
        monday = ISSUE_DATE + dt.timedelta(days=1)
        forecasts = {
            store: client.get(f"/v1/stores/{store}/forecast", headers=auth).json()["forecast"]
            for store in (1, 2, 3)
        }
        # Monday to Thursday, store 3 misses most (x2), store 1 a little (x1.1), store 2 not
        # at all.
        batch = [
            day_record(
                store,
                monday + dt.timedelta(days=offset),
                forecasts[store][1 + offset][columns.YHAT] * factor,
            )
            for offset in range(4)
            for store, factor in ((1, 1.1), (2, 1.0), (3, 2.0))
        ]
        assert client.post("/v1/sales", json={"records": batch}, headers=auth).status_code == 200
        samples = metric_samples(client, auth)
    stores = {labels for name, labels in samples if name == "sfmlops_store_realized_rmspe"}
    assert stores == {"store_id=3"}


def test_a_store_far_off_its_forecasts_is_listed_stale(
    served: TestClient, auth: dict[str, str]
) -> None:
    monday = ISSUE_DATE + dt.timedelta(days=1)
    forecast = {
        store: served.get(f"/v1/stores/{store}/forecast", headers=auth).json()["forecast"]
        for store in (1, 2, 3)
    }
    # Monday to Friday: store 1 sells 3x its forecast, stores 2 and 3 as forecast. From
    # Thursday (4 scored days) store 1's week misses by 2/3, the others not at all.
    batch = [
        day_record(
            store,
            monday + dt.timedelta(days=offset),
            forecast[store][1 + offset][columns.YHAT] * (3.0 if store == 1 else 1.0),
        )
        for offset in range(5)
        for store in (1, 2, 3)
    ]
    assert served.post("/v1/sales", json={"records": batch}, headers=auth).status_code == 200

    stale = served.get("/v1/accuracy/stale-stores", headers=auth).json()
    strict = served.get(
        "/v1/accuracy/stale-stores", params={"days": 3}, headers=auth
    ).json()  # Wednesday has 3 scored days only

    backtest = {
        s[columns.STORE_ID]: s["rmspe"]
        for s in served.get("/v1/models/champion", headers=auth).json()["stores"]
    }
    assert (stale["end"], stale["margin"], stale["days"]) == (
        (monday + dt.timedelta(days=4)).isoformat(),
        2.0,
        2,
    )
    (store,) = stale["stores"]
    assert store["store_id"] == 1
    assert store["ratios"] == pytest.approx([(2 / 3) / backtest[1]] * 2, rel=1e-3)
    assert strict["stores"] == []
    assert served.get("/v1/accuracy/stale-stores", params={"margin": 0.5}).status_code in (401, 422)
