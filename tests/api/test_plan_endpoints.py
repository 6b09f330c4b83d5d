"""The plan of known future covariates through the API: stored, used by forecasts, named."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

DAYS = [dt.date(2015, 6, 15) + dt.timedelta(days=offset) for offset in range(14)]


def _plan_day(store_id: int, day: dt.date, promo: int, **others: object) -> dict[str, object]:
    return {
        "store_id": store_id,
        "date": day.isoformat(),
        "open": 1,
        "promo": promo,
        "state_holiday": "0",
        "school_holiday": 0,
    } | others


def test_forecasts_use_the_stored_plan_and_name_it(
    served: TestClient,
) -> None:
    # The served champion here is the seasonal naive model, which has no promotion lift:
    # tests/unit/test_covariate_plan.py checks the lift with the gbm.
    champions = served.get("/v1/models/champion").json()["stores"]
    store = champions[1]["store_id"]
    before = served.get(
        f"/v1/stores/{store}/forecast", params={"start": DAYS[0], "days": 14}
    ).json()
    # Promotions on the first week's weekdays only, none on the second's.
    plan = [_plan_day(store, day, promo=int(day < DAYS[7] and day.weekday() < 5)) for day in DAYS]

    stored = served.post("/v1/plan", json=plan)

    assert stored.status_code == 200, stored.text
    assert stored.json() == {"stored": 14, "stores": 1, "first": "2015-06-15", "last": "2015-06-28"}
    after = served.get(f"/v1/stores/{store}/forecast", params={"start": DAYS[0], "days": 14}).json()
    days = after["forecast"]
    assert [day["covariates"]["promo"] for day in days] == [p["promo"] for p in plan]
    assert all(set(day["covariate_sources"].values()) == {"plan"} for day in days)
    assert after["assumptions"] == []  # the plan gives every covariate of every day
    assert after != before
    # The default horizon and batch requests use the plan too; a caller's value still wins.
    batch = served.post(
        "/v1/forecast",
        json=[
            {
                "store_id": store,
                "dates": [DAYS[0].isoformat()],
                "covariates": [{"date": DAYS[0].isoformat(), "promo": 0}],
            }
        ],
    ).json()["forecasts"][0]["forecast"][0]
    assert batch["covariate_sources"]["promo"] == "caller"
    assert batch["covariate_sources"]["open"] == "plan"
    # Stores without a plan keep their derived defaults.
    other_store = next(entry["store_id"] for entry in champions if entry["store_id"] != store)
    other = served.get(
        f"/v1/stores/{other_store}/forecast", params={"start": DAYS[0], "days": 3}
    ).json()
    assert {s for day in other["forecast"] for s in day["covariate_sources"].values()} == {
        "default"
    }
    # The plan reads back with who set each day.
    read = served.get(f"/v1/stores/{store}/plan").json()
    assert [day["promo"] for day in read["days"]] == [p["promo"] for p in plan]
    assert read["days"][0]["updated_by"] == "api-token"


def test_a_bad_plan_names_the_record_and_field_and_stores_nothing(served: TestClient) -> None:
    plan = [_plan_day(2, DAYS[0], promo=1), _plan_day(4242, DAYS[1], promo=1)]

    response = served.post("/v1/plan", json=plan)

    assert response.status_code == 422
    assert "record 1, field store_id" in response.json()["detail"]
    assert served.get("/v1/stores/2/plan").json()["days"] == []
    bad_flag = served.post("/v1/plan", json=[_plan_day(2, DAYS[0], promo=2)])
    assert bad_flag.status_code == 422
    assert "promo" in bad_flag.text
    assert served.get("/v1/stores/2/plan").json()["days"] == []


def test_a_plan_window_at_the_calendars_end_stops_there(served: TestClient) -> None:
    # start + days reaches past 9999-12-31 (found by tests/api/test_openapi_stateful.py as a
    # 500): the window ends with the calendar.
    response = served.get("/v1/stores/2/plan", params={"start": "9999-12-31", "days": 2})

    assert response.status_code == 200
    assert response.json()["days"] == []
