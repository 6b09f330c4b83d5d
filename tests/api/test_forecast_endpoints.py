"""Forecasts, the champion, readiness and model metrics through the HTTP interface.

The API serves a real seasonal-naive bundle (stores 1-5 of the slice) registered as
champion version 1 in a real embedded MLflow registry.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from sfmlops.adapters.db import forecast_records
from sfmlops.core import columns
from sfmlops.core.forecasting.bundle import ForecastBundle
from sfmlops.services.api import create_app
from sfmlops.settings import Settings
from tests.support.api_tokens import AUTH
from tests.support.network import free_port

pytestmark = pytest.mark.integration

DEFAULT_DAYS = [f"2015-06-{day}" for day in range(14, 21)]


def bundle_forecast(
    bundle: ForecastBundle, store_id: int, dates: list[str], **covariates: Any
) -> pd.DataFrame:
    future = pd.DataFrame(
        {columns.STORE_ID: store_id, columns.SALES_DATE: pd.to_datetime(dates)}
        | {k: v for k, v in covariates.items()}
    )
    return bundle.predict(future).frame


def values(forecast: list[dict[str, Any]], name: str = columns.YHAT) -> list[float]:
    return [day[name] for day in forecast]


def test_default_forecast_is_the_champions_next_seven_days(
    served: TestClient, bundle: ForecastBundle
) -> None:
    response = served.get("/v1/stores/1/forecast")

    assert response.status_code == 200
    body = response.json()
    assert (body["store_id"], body["product_id"], body["model_version"]) == (1, "total", "1")
    assert (body["start"], body["days"]) == ("2015-06-14", 7)  # the day after the as-of date
    assert [day["date"] for day in body["forecast"]] == DEFAULT_DAYS
    assert any("open: missing" in note for note in body["assumptions"])
    expected = bundle_forecast(bundle, 1, DEFAULT_DAYS)
    for name in columns.FORECAST_VALUES:
        assert values(body["forecast"], name) == pytest.approx(expected[name].tolist(), abs=0.01)
    assert body["forecast"][0][columns.YHAT] == 0  # store 1 is closed on Sundays
    assert body["forecast"][1][columns.YHAT] > 1000


def test_days_after_the_calibrated_horizon_are_flagged(served: TestClient) -> None:
    # The slice's history ends on 2015-06-13: intervals are calibrated through 48 days later.
    within = served.get("/v1/stores/1/forecast", params={"days": 48}).json()
    beyond = served.get("/v1/stores/1/forecast", params={"days": 49}).json()
    far = served.get("/v1/stores/1/forecast", params={"start": "2099-01-01"}).json()
    batch = served.post(
        "/v1/forecast",
        json=[{"store_id": 1}, {"store_id": 2, "start": "2015-07-31", "days": 2}],
    ).json()["forecasts"]

    assert within["calibrated_until"] == "2015-07-31"
    assert within["forecast"][-1]["date"] == "2015-07-31"
    assert within["beyond_calibrated_horizon"] is False
    assert beyond["beyond_calibrated_horizon"] is True
    assert far["beyond_calibrated_horizon"] is True
    assert [series["beyond_calibrated_horizon"] for series in batch] == [False, True]
    default = served.get("/v1/stores/1/forecast").json()
    assert default["beyond_calibrated_horizon"] is False  # the precomputed body has it too


def test_other_starts_and_lengths_are_computed(served: TestClient, bundle: ForecastBundle) -> None:
    default = served.get("/v1/stores/2/forecast").json()
    later = served.get("/v1/stores/2/forecast", params={"start": "2015-06-17", "days": 30}).json()
    shorter = served.get("/v1/stores/2/forecast", params={"days": 3}).json()

    assert (later["start"], later["days"], len(later["forecast"])) == ("2015-06-17", 30, 30)
    assert later["forecast"][-1]["date"] == "2015-07-16"
    assert later["forecast"][:4] == default["forecast"][3:]
    assert shorter["forecast"] == default["forecast"][:3]
    expected = bundle_forecast(
        bundle, 2, [d.isoformat() for d in pd.date_range("2015-06-17", periods=30).date]
    )
    assert values(later["forecast"]) == pytest.approx(expected[columns.YHAT].tolist(), abs=0.01)


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/v1/stores/4242/forecast", {}, 404, "unknown store 4242"),
        ("/v1/stores/6/forecast", {}, 404, "unknown store 6"),  # in the database, not the model
        ("/v1/stores/1/forecast", {"product_id": "soap"}, 404, "no product 'soap'"),
        ("/v1/stores/1/forecast", {"days": 0}, 422, "days"),
        ("/v1/stores/1/forecast", {"days": 367}, 422, "less than or equal to 366"),
        ("/v1/stores/1/forecast", {"start": "June"}, 422, "start"),
        (
            "/v1/stores/1/forecast",
            {"start": "2015-06-13"},
            422,
            "2015-06-13 is not after the model's last training date 2015-06-13; "
            "forecasts start on 2015-06-14",
        ),
        ("/v1/models/champion", {"store_id": 4242}, 404, "unknown store 4242"),
    ],
)
def test_bad_forecast_requests(
    served: TestClient, path: str, params: dict[str, Any], status: int, message: str
) -> None:
    response = served.get(path, params=params)

    assert response.status_code == status
    assert message in response.json()["detail"]


def test_batch_mixes_defaults_dates_and_covariates(
    served: TestClient, bundle: ForecastBundle
) -> None:
    monday, tuesday = "2015-06-15", "2015-06-16"
    batch = [
        {"store_id": 3},
        {"store_id": 1, "start": "2015-06-20", "days": 2},
        {
            "store_id": 2,
            "dates": [tuesday, monday],
            "covariates": [
                {"date": monday, "open": 0, "promo": 0, "state_holiday": "0", "school_holiday": 0},
                {"date": tuesday, "open": 1, "promo": 1, "state_holiday": "0", "school_holiday": 0},
            ],
        },
    ]

    response = served.post("/v1/forecast", json=batch)

    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "1"
    default, later, given = body["forecasts"]
    assert default == served.get("/v1/stores/3/forecast").json()
    assert (later["store_id"], later["start"], later["days"]) == (1, "2015-06-20", 2)
    assert [day["date"] for day in given["forecast"]] == [tuesday, monday]  # as asked
    assert given["assumptions"] == []  # every covariate given for every day
    assert given["forecast"][1][columns.YHAT] == 0  # closed on Monday, as the caller said
    expected = bundle_forecast(
        bundle, 2, [tuesday], open=[1], promo=[1], state_holiday=["0"], school_holiday=[0]
    )
    assert given["forecast"][0][columns.YHAT] == pytest.approx(
        expected[columns.YHAT].iloc[0], abs=0.01
    )


def test_each_day_names_its_covariates_and_where_they_came_from(
    served: TestClient, bundle: ForecastBundle
) -> None:
    days = [f"2015-06-{day}" for day in range(14, 28)]
    derived = bundle.predict(
        pd.DataFrame({columns.STORE_ID: 2, columns.SALES_DATE: pd.to_datetime(days)})
    ).covariates
    assert derived is not None
    promo = derived[columns.PROMO].tolist()
    assert 0 < sum(promo) < len(days)  # the store's promotion cycle, not all zeros

    got = served.get("/v1/stores/2/forecast", params={"start": days[0], "days": 14}).json()
    assert [day["covariates"]["promo"] for day in got["forecast"]] == promo
    assert all(set(day["covariate_sources"].values()) == {"default"} for day in got["forecast"])
    assert got["forecast"][0]["covariates"]["open"] == 0  # store 2 is closed on Sundays

    # A promotion the caller adds wins over the cycle and is named as the caller's.
    plain = promo.index(0, 1)  # a weekday without a promotion in the cycle
    batch = [
        {
            "store_id": 2,
            "dates": [days[plain]],
            "covariates": [{"date": days[plain], "promo": 1}],
        }
    ]
    given = served.post("/v1/forecast", json=batch).json()["forecasts"][0]["forecast"][0]
    assert given["covariates"]["promo"] == 1
    assert given["covariate_sources"] == {
        "open": "default",
        "promo": "caller",
        "state_holiday": "default",
        "school_holiday": "default",
    }


def test_batch_of_every_series(served: TestClient) -> None:
    response = served.post("/v1/forecast", json=[{"store_id": s} for s in range(1, 6)])

    assert [f["store_id"] for f in response.json()["forecasts"]] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("batch", "status", "message"),
    [
        ([], 422, "at least 1"),
        ([{"store_id": 1}, {"store_id": 4242}], 404, "unknown store 4242"),
        (
            [{"store_id": 1}, {"store_id": 1, "days": 3}],
            422,
            "store 1 product 'total' appears twice",
        ),
        ([{"store_id": 1, "start": "2015-06-20", "dates": ["2015-06-21"]}], 422, "not both"),
        ([{"store_id": 1, "dates": ["2015-06-01"]}], 422, "2015-06-01 is not after"),
        (
            [{"store_id": 1, "dates": ["2015-06-21", "2015-06-21"]}],
            422,
            "a date is asked for twice",
        ),
        ([{"store_id": 1, "days": 400}], 422, "less than or equal to 366"),
        (
            [{"store_id": 1, "covariates": [{"date": "2015-06-15", "state_holiday": "x"}]}],
            422,
            "covariates.0.state_holiday",
        ),
        (
            [{"store_id": 1, "covariates": [{"date": "2015-06-15", "open": 2}]}],
            422,
            "covariates.0.open",
        ),
        (
            [{"store_id": 1, "covariates": [{"date": "2015-07-30", "open": 1}]}],
            422,
            "covariates for 2015-07-30, which is not a forecast date",
        ),
        (
            [{"store_id": 1, "covariates": [{"date": "2015-06-15"}, {"date": "2015-06-15"}]}],
            422,
            "covariates give a date twice",
        ),
        ([{"store_id": 1, "colour": "red"}], 422, "colour"),
        ([{"store_id": 1, "days": 366}] * 300, 422, "109800 series-days asked for; at most 100000"),
    ],
)
def test_bad_batches(served: TestClient, batch: list[Any], status: int, message: str) -> None:
    response = served.post("/v1/forecast", json=batch)

    assert response.status_code == status
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'[{"store_id": 1}', "application/json", "body: Invalid JSON"),
        (b'[{"store_id": 1}]', "text/plain", "send the batch as JSON"),
        (b'[{"store_id": 1}]', None, "send the batch as JSON"),
        (b"", "application/json", "body: Invalid JSON"),
        (b'{"store_id": 1}', "application/json", "body: Input should be a valid array"),
        (
            b'[{"store_id": 1}, {"store_id": 2, "covariates": [{"date": "2015-06-15", '
            b'"promo": 1}, {"promo": 0}]}]',
            "application/json",
            "body.1.covariates.1.date: Field required",
        ),
    ],
    ids=["cut-short", "text", "no-content-type", "empty", "not-a-list", "row-and-field"],
)
def test_a_batch_body_that_is_not_a_json_list_of_series_is_refused_naming_where(
    served: TestClient, body: bytes, content_type: str | None, message: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}

    response = served.post("/v1/forecast", content=body, headers=headers)

    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_each_series_of_a_batch_is_answered_as_it_would_be_alone(served: TestClient) -> None:
    # Covariates for some days of some series, in another order than their days, mixed with
    # a series without any and one asked by dates: each row must meet its own day's values.
    batch = [
        {
            "store_id": 1,
            "start": "2015-06-16",
            "days": 5,
            "covariates": [
                {"date": "2015-06-19", "promo": 0, "school_holiday": 1},
                {"date": "2015-06-16", "open": 0},
            ],
        },
        {"store_id": 2, "start": "2015-06-20", "days": 3},
        {
            "store_id": 3,
            "dates": ["2015-06-18", "2015-06-15"],
            "covariates": [{"date": "2015-06-15", "state_holiday": "a", "open": 1}],
        },
        {"store_id": 4, "covariates": [{"date": "2015-06-17", "promo": 1}]},
    ]

    together = served.post("/v1/forecast", json=batch).json()["forecasts"]

    alone = [served.post("/v1/forecast", json=[series]).json()["forecasts"][0] for series in batch]
    assert together == alone
    first = together[0]["forecast"]
    assert first[0]["covariates"]["open"] == 0  # 2015-06-16 closed, as given
    assert first[0]["covariate_sources"]["open"] == "caller"
    assert first[3]["covariate_sources"]["school_holiday"] == "caller"
    assert first[1]["covariate_sources"] == dict.fromkeys(first[1]["covariates"], "default")
    assert together[2]["forecast"][1]["covariates"]["state_holiday"] == "a"
    assert [day["date"] for day in together[2]["forecast"]] == ["2015-06-18", "2015-06-15"]


def test_champion_description(served: TestClient, bundle: ForecastBundle) -> None:
    everything = served.get("/v1/models/champion").json()
    one = served.get("/v1/models/champion", params={"store_id": 2}).json()

    reported = next(
        r for r in bundle.metadata["reported_metrics"] if r[columns.MODEL] == "champion"
    )
    assert (everything["name"], everything["version"]) == ("sfmlops-forecaster", "1")
    assert everything["run_id"]
    registered = dt.datetime.fromisoformat(everything["trained_at"])
    assert abs(dt.datetime.now(dt.UTC) - registered) < dt.timedelta(hours=1)
    assert everything["last_date"] == "2015-06-13"
    assert everything["metrics"]["rmspe"] == pytest.approx(reported["rmspe"])
    # The reported (only) window's models saw 42 days, too few to calibrate intervals on:
    # no coverage to report, rather than 0 %.
    assert pd.isna(reported["coverage_80"])
    assert everything["metrics"]["coverage_80"] is None
    assert everything["champion_mix"] == {"seasonal_naive": 5}
    # seasonal_naive is backtested as it is served: no stand-in's figures to name.
    assert everything["backtest_stand_ins"] == {}
    assert [s["store_id"] for s in everything["stores"]] == [1, 2, 3, 4, 5]
    row = bundle.champions[bundle.champions[columns.STORE_ID] == 2].iloc[0]
    assert one["stores"] == [
        {
            "store_id": 2,
            "product_id": "total",
            "model": "seasonal_naive",
            "rmspe": pytest.approx(row["rmspe"]),
            "rmspe_by_model": {"seasonal_naive": pytest.approx(row["rmspe_seasonal_naive"])},
        }
    ]


def test_ready_and_status_name_the_champion(served: TestClient) -> None:
    assert served.get("/ready").json() == {"status": "ready", "reason": None, "model_version": "1"}
    assert served.get("/v1/status").json()["champion_version"] == "1"


def test_without_a_champion_forecasts_are_503_and_the_champion_404(client: TestClient) -> None:
    forecast = client.get("/v1/stores/1/forecast")
    batch = client.post("/v1/forecast", json=[{"store_id": 1}])
    champion = client.get("/v1/models/champion")

    assert forecast.status_code == batch.status_code == 503
    assert forecast.json() == {"detail": "no champion model yet: run sfmlops train"}
    assert champion.status_code == 404
    assert champion.json() == {"detail": "no champion model yet: run sfmlops train"}
    assert client.get("/v1/status").json()["champion_version"] is None


def test_an_unreachable_registry_at_start_up_is_not_ready(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    settings = Settings(
        _env_file=None,
        home=tmp_path / "home",
        mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}",
        model_poll_seconds=3600,
    )
    with TestClient(create_app(settings, engine=sqlite_engine), headers=AUTH) as client:
        ready = client.get("/ready")
        forecast = client.get("/v1/stores/1/forecast")

    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert "model registry unreachable" in ready.json()["reason"]
    assert forecast.status_code == 503
    assert "model registry unreachable" in forecast.json()["detail"]


def test_latest_precomputed_forecasts(client: TestClient, loaded_engine: Engine) -> None:
    assert client.get("/v1/forecasts/latest").status_code == 404

    def run(version: str, created_at: dt.datetime, stores: list[int], yhat: float) -> None:
        days = pd.date_range("2015-06-14", periods=3)
        frame = pd.DataFrame(
            [(s, "total", d) for s in stores for d in days],
            columns=[columns.STORE_ID, columns.PRODUCT_ID, columns.SALES_DATE],
        ).assign(**{name: yhat for name in columns.FORECAST_VALUES})
        with loaded_engine.begin() as connection:
            forecast_records.write_forecasts(connection, frame, version, created_at)

    run("1", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), [1, 2, 3], 100.0)
    run("2", dt.datetime(2026, 1, 8, tzinfo=dt.UTC), [1, 2], 200.123456789012)

    latest = client.get("/v1/forecasts/latest").json()
    one = client.get("/v1/forecasts/latest", params={"store_id": 2}).json()
    older = client.get("/v1/forecasts/latest", params={"store_id": 3}).json()
    missing = client.get("/v1/forecasts/latest", params={"store_id": 4})

    assert latest["model_version"] == "2"
    assert dt.datetime.fromisoformat(latest["created_at"]).date() == dt.date(2026, 1, 8)
    assert [(f["store_id"], f["date"]) for f in latest["forecasts"]][:4] == [
        (1, "2015-06-14"), (1, "2015-06-15"), (1, "2015-06-16"), (2, "2015-06-14"),
    ]  # fmt: skip
    assert len(latest["forecasts"]) == 6
    assert latest["forecasts"][0] | {"yhat": 200.12} == latest["forecasts"][0]  # to the cent
    assert {f["store_id"] for f in one["forecasts"]} == {2}
    assert older["model_version"] == "1"  # store 3's newest run
    assert missing.status_code == 404
    assert "store 4" in missing.json()["detail"]


def test_model_metrics(served: TestClient, bundle: ForecastBundle) -> None:
    served.get("/v1/stores/1/forecast")
    served.get("/v1/stores/1/forecast", params={"days": 30})
    served.post("/v1/forecast", json=[{"store_id": 1}, {"store_id": 2, "days": 2}])

    text = served.get("/metrics").text

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("sfmlops_forecasts_served_total", (("endpoint", "store"),))] == 37
    assert samples[("sfmlops_forecasts_served_total", (("endpoint", "batch"),))] == 9
    assert samples[("sfmlops_model_info", (("version", "1"),))] == 1
    reported = next(
        r for r in bundle.metadata["reported_metrics"] if r[columns.MODEL] == "champion"
    )
    assert samples[("sfmlops_champion_backtest_rmspe", ())] == pytest.approx(reported["rmspe"])
    assert any(
        name == "http_request_duration_seconds_count"
        and dict(labels).get("handler") == "/v1/stores/{store_id}/forecast"
        for name, labels in samples
    )
    promtool = shutil.which("promtool")
    if promtool is not None:
        check = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(
    ("as_of", "default_start"),
    [
        (dt.date(2015, 6, 20), "2015-06-21"),  # newer sales than the model: after the as-of date
        (dt.date(2015, 6, 1), "2015-06-14"),  # an older as-of date: the model's first day
    ],
)
def test_the_default_horizon_follows_the_as_of_date(
    served_settings: Settings, sqlite_engine: Engine, as_of: dt.date, default_start: str
) -> None:
    settings = served_settings.model_copy(update={"as_of": as_of})
    with TestClient(create_app(settings, engine=sqlite_engine), headers=AUTH) as client:
        body = client.get("/v1/stores/1/forecast").json()
        batch = client.post("/v1/forecast", json=[{"store_id": 1}]).json()

    assert body["start"] == default_start
    assert body["forecast"][0]["date"] == default_start
    assert batch["forecasts"][0] == body
