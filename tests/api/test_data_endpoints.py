"""Stores, sales history, ingestion, status, health and metrics through the HTTP interface."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, select

from sfmlops.adapters.db import sales_records, training_job_records
from sfmlops.adapters.db.engine import (
    SQLITE_BULK_CACHE_KIB,
    SQLITE_READER_CACHE_KIB,
    make_engine,
    migrate,
)
from sfmlops.adapters.db.tables import ingest_dead_letters
from sfmlops.core.forecasting.models import MODEL_EXTRAS
from sfmlops.services.api import create_app
from sfmlops.settings import Settings
from tests.support.api_tokens import AUTH

pytestmark = pytest.mark.integration
NO_AUTH = {"Authorization": ""}  # replaces the client's default token


def sale(
    store_id: Any = 1, sales_date: str = "2015-06-14", sales: Any = 5000, **more: Any
) -> dict[str, Any]:
    return {
        "store_id": store_id,
        "sales_date": sales_date,
        "sales": sales,
        "customers": 500,
        "open": 1,
        "promo": 0,
        "state_holiday": "0",
        "school_holiday": 0,
    } | more


def test_health_and_readiness_without_a_model(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert "no champion model" in ready.json()["reason"]
    # The readiness probe's form: the database answers, a model is not required.
    probe = client.get("/ready", params={"require_model": "false"})
    assert probe.status_code == 200
    assert probe.json()["status"] == "degraded"
    assert "no champion model" in probe.json()["reason"]


def test_stores_list_and_detail(client: TestClient) -> None:
    stores = client.get("/v1/stores").json()
    one = client.get("/v1/stores/1").json()

    assert stores["total"] == 20
    assert [s["store_id"] for s in stores["stores"]][:3] == [1, 2, 3]
    assert (
        client.get("/v1/stores", params={"limit": 5, "offset": 18}).json()["stores"][0]["store_id"]
        == 19
    )
    assert one["store_type"] == "c"
    assert one["state"] == "HE"
    assert one["series"] == [
        {
            "product_id": "total",
            "first_sales_date": "2015-03-16",
            "last_sales_date": "2015-06-13",
            "days": 90,
        }
    ]


def test_unknown_store_is_404(client: TestClient) -> None:
    for path in ("/v1/stores/4242", "/v1/stores/4242/sales"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "unknown store 4242"}


def test_unknown_product_is_404_and_a_known_one_outside_its_dates_is_empty(
    client: TestClient,
) -> None:
    unknown = client.get("/v1/stores/1/sales", params={"product_id": "socks"})
    before = client.get("/v1/stores/1/sales", params={"start": "2001-01-01", "end": "2001-01-31"})

    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "store 1 has no sales of product 'socks'"}
    assert before.status_code == 200
    assert before.json()["days"] == []


def test_sales_history_defaults_to_eight_weeks_before_the_as_of_date(client: TestClient) -> None:
    history = client.get("/v1/stores/1/sales").json()
    window = client.get(
        "/v1/stores/1/sales", params={"start": "2015-06-12", "end": "2015-06-13"}
    ).json()

    assert (history["start"], history["end"]) == ("2015-04-19", "2015-06-13")
    assert len(history["days"]) == 56
    assert window["days"][-1] == {
        "sales_date": "2015-06-13", "sales": 4256.0, "customers": 502, "open": 1, "promo": 0,
        "state_holiday": "0", "school_holiday": 0,
    }  # fmt: skip


def test_a_window_at_the_calendars_start_stops_there(client: TestClient) -> None:
    # The default start, eight weeks before `end`, is before 0001-01-01 (found by
    # tests/api/test_openapi_stateful.py as a 500).
    history = client.get("/v1/stores/1/sales", params={"end": "0001-01-05"})

    assert history.status_code == 200
    assert (history.json()["start"], history.json()["end"]) == ("0001-01-01", "0001-01-05")
    assert history.json()["days"] == []


def test_bad_dates_are_422(client: TestClient) -> None:
    reversed_range = client.get(
        "/v1/stores/1/sales", params={"start": "2015-06-13", "end": "2015-06-01"}
    )
    not_a_date = client.get("/v1/stores/1/sales", params={"start": "June"})

    assert reversed_range.status_code == 422
    assert "after end" in reversed_range.json()["detail"]
    assert not_a_date.status_code == 422


def test_ingestion_keeps_valid_records_and_dead_letters_the_rest(
    client: TestClient, auth: dict[str, str], loaded_engine: Engine
) -> None:
    batch = [
        sale(),
        sale(store_id=2, sales=-3),
        sale(store_id=4242),
        sale(store_id=3, sales_date="2015-06-31"),
    ]

    response = client.post("/v1/sales", json={"records": batch}, headers=auth)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "partial"
    assert body["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (1, "sales: must be >= 0"),
        (2, "store_id: unknown store (not in the store metadata)"),
        (3, "sales_date: not a date in YYYY-MM-DD form"),
    ]
    with loaded_engine.connect() as connection:
        stored = sales_records.read_sales(connection, [1, 2, 3])
        letters = connection.execute(select(ingest_dead_letters)).mappings().all()
    assert stored["sales_date"].max().date().isoformat() == "2015-06-14"
    assert len(stored[stored["sales_date"] == "2015-06-14"]) == 1
    assert sorted(letter["reason"] for letter in letters) == sorted(
        r["reason"] for r in body["rejected"]
    )
    assert all(letter["source"] == "api" for letter in letters)


def test_ingestion_is_an_idempotent_upsert(client: TestClient, auth: dict[str, str]) -> None:
    for value in (100, 100, 250):
        assert (
            client.post("/v1/sales", json={"records": [sale(sales=value)]}, headers=auth).json()[
                "accepted"
            ]
            == 1
        )

    days = client.get(
        "/v1/stores/1/sales", params={"start": "2015-06-14", "end": "2015-06-14"}
    ).json()["days"]
    assert [d["sales"] for d in days] == [250.0]


def test_writes_need_the_token(client: TestClient) -> None:
    missing = client.post("/v1/sales", json={"records": [sale()]}, headers=NO_AUTH)
    wrong = client.post(
        "/v1/sales", json={"records": [sale()]}, headers={"Authorization": "Bearer nope"}
    )

    assert missing.status_code == wrong.status_code == 401
    day = {"start": "2015-06-14", "end": "2015-06-14"}
    assert client.get("/v1/stores/1/sales", params=day).json()["days"] == []


def test_malformed_bodies_are_422_or_413(client: TestClient, auth: dict[str, str]) -> None:
    not_json = client.post(
        "/v1/sales", content=b"{", headers=auth | {"Content-Type": "application/json"}
    )
    empty = client.post("/v1/sales", json={"records": []}, headers=auth)
    huge = client.post("/v1/sales", json={"records": [sale()] * 2000}, headers=auth)
    # Without Content-Length (chunked): the limit applies while the body is read.
    chunk = b"[" + b"0," * 50_000
    chunked = client.post(
        "/v1/sales",
        content=(chunk for _ in range(200)),
        headers=auth | {"Content-Type": "application/json"},
    )

    assert not_json.status_code == 422
    assert empty.status_code == 422
    assert huge.status_code == chunked.status_code == 413
    assert "larger than" in huge.json()["detail"]
    assert "larger than" in chunked.json()["detail"]


def test_status_reports_freshness(
    client: TestClient, auth: dict[str, str], loaded_engine: Engine
) -> None:
    client.post("/v1/sales", json={"records": [sale(), sale(store_id=-1)]}, headers=auth)

    status = client.get("/v1/status").json()

    with loaded_engine.connect() as connection:
        summary = sales_records.sales_summary(connection)
    assert status["sales_rows"] == summary.rows
    assert status["as_of"] == status["latest_sales_date"] == "2015-06-14"
    assert status["stores"] == 20
    assert status["sales_ingested_last_day"] >= 1
    assert status["dead_letters_last_day"] == 1
    assert status["champion_version"] is None
    assert status["trainable_models"] == ["gbm", "prophet", "seasonal_naive"]


def test_metrics_are_prometheus_text(client: TestClient, auth: dict[str, str]) -> None:
    client.get("/v1/stores/1")
    client.post("/v1/sales", json={"records": [sale(), sale(store_id=-1)]}, headers=auth)

    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}

    assert {"http_requests", "http_request_duration_seconds", "sfmlops_training_jobs"} <= set(
        families
    )
    ingested = {
        s.labels["source"]: s.value
        for s in families["sfmlops_sales_ingested"].samples
        if s.name.endswith("_total")
    }
    rejected = {
        s.labels["source"]: s.value
        for s in families["sfmlops_sales_rejected"].samples
        if s.name.endswith("_total")
    }
    assert ingested == {"api": 1.0}
    assert rejected == {"api": 1.0}
    jobs = {s.labels["status"]: s.value for s in families["sfmlops_training_jobs"].samples}
    assert jobs == {"queued": 0, "running": 0, "succeeded": 0, "failed": 0}


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])

    assert {
        "/health",
        "/ready",
        "/v1/status",
        "/v1/stores",
        "/v1/stores/{store_id}",
        "/v1/stores/{store_id}/sales",
        "/v1/sales",
    } <= paths


def test_training_jobs_need_the_token_and_known_stores(
    client: TestClient, auth: dict[str, str]
) -> None:
    unauthorised = client.post("/v1/training-jobs", json={"stores": [1]}, headers=NO_AUTH)
    unknown = client.post("/v1/training-jobs", json={"stores": [1, 4242]}, headers=auth)
    empty = client.post("/v1/training-jobs", json={"stores": []}, headers=auth)
    no_scope = client.post("/v1/training-jobs", json={}, headers=auth)
    null_scope = client.post("/v1/training-jobs", json={"stores": None}, headers=auth)
    stray_field = client.post(
        "/v1/training-jobs", json={"stores": [1], "force": True}, headers=auth
    )
    long_id = "x" * 3000
    missing = client.get(f"/v1/training-jobs/{long_id}")
    # An unknown field's name is the caller's text too: not echoed whole in the 422.
    long_field = client.post("/v1/training-jobs", json={"stores": [1], long_id: 1}, headers=auth)

    assert unauthorised.status_code == 401
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "unknown store(s): 4242"}
    assert empty.status_code == 422
    # No silent training of every store: the scope is required, "all" must be said.
    assert no_scope.status_code == null_scope.status_code == 422
    assert no_scope.json()["detail"].startswith("body.stores: Field required")
    assert stray_field.status_code == 422
    assert stray_field.json()["detail"].startswith("body.force: Extra inputs")
    assert missing.status_code == 404
    assert len(missing.json()["detail"]) < 120
    assert missing.json()["detail"].startswith("unknown training job xxxx")
    assert missing.json()["detail"].endswith("(3,000 characters)")
    assert long_field.status_code == 422
    assert long_field.json()["detail"] == (
        f"body.{'x' * 40}… (3,000 characters): Extra inputs are not permitted"
    )
    assert client.get("/v1/training-jobs").json() == {"jobs": []}
    assert client.get("/v1/training-jobs/nope").status_code == 404


class RecordingRunner:
    """A job runner that starts nothing and keeps the command lines it was given."""

    name = "local"

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def submit(self, job_id: str, arguments: list[str]) -> str:
        self.commands.append(list(arguments))
        return f"runner-{job_id}"

    def state(self, runner_job_id: str) -> str:
        return "running"


def test_a_training_job_trains_the_model_set_it_names(
    client: TestClient, loaded_engine: Engine
) -> None:
    runner = RecordingRunner()
    client.app.state.job_runner = runner  # type: ignore[attr-defined]

    chosen = client.post(
        "/v1/training-jobs", json={"stores": [1], "models": ["prophet", "gbm", "prophet"]}
    )
    default = client.post("/v1/training-jobs", json={"stores": [2]})

    assert chosen.status_code == default.status_code == 202
    (with_models, without) = runner.commands
    assert with_models[with_models.index("--models") + 1] == "prophet,gbm"
    assert "--models" not in without  # the CLI's default set (a retrain: the champion's own)


def test_an_unknown_model_is_refused_by_name_and_starts_nothing(
    client: TestClient, loaded_engine: Engine
) -> None:
    runner = RecordingRunner()
    client.app.state.job_runner = runner  # type: ignore[attr-defined]

    unknown = client.post("/v1/training-jobs", json={"stores": "all", "models": ["gbm", "arima"]})
    empty = client.post("/v1/training-jobs", json={"stores": "all", "models": []})

    assert unknown.status_code == empty.status_code == 422
    detail = unknown.json()["detail"]
    assert "unknown model 'arima'" in detail
    assert "choose from gbm, prophet, seasonal_naive" in detail
    assert runner.commands == []
    assert client.get("/v1/training-jobs").json() == {"jobs": []}


def test_a_model_this_api_cannot_serve_is_refused(
    client: TestClient, loaded_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in the API image, which carries no Prophet: a Prophet champion could not forecast.
    monkeypatch.setitem(MODEL_EXTRAS, "prophet", "sfmlops_no_such_package")
    runner = RecordingRunner()
    client.app.state.job_runner = runner  # type: ignore[attr-defined]

    refused = client.post("/v1/training-jobs", json={"stores": [1], "models": ["prophet"]})
    default = client.post("/v1/training-jobs", json={"stores": [1]})

    assert refused.status_code == 422
    assert refused.json()["detail"] == (
        "this API cannot serve prophet forecasts (its environment lacks the "
        "sfmlops_no_such_package extra); choose among gbm, seasonal_naive"
    )
    assert default.status_code == 202
    assert len(runner.commands) == 1
    # The dashboard offers what the status lists: not Prophet here.
    assert client.get("/v1/status").json()["trainable_models"] == ["gbm", "seasonal_naive"]


def test_implausible_records_are_dead_lettered_and_listed(client: TestClient) -> None:
    future = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)).isoformat()
    batch = [
        sale(day_of_week=7),  # 2015-06-14 is a Sunday; the others omit the optional field
        sale(store_id=2),
        sale(store_id=3, sales_date=future),
        sale(store_id=4, sales_date="1900-01-01"),
        sale(store_id=5, open=0, sales=100),
        sale(store_id=6, sales=1e12),
    ]

    response = client.post("/v1/sales", json={"records": batch}).json()
    listed = client.get("/v1/dead-letters").json()
    page = client.get("/v1/dead-letters", params={"limit": 2}).json()
    rest = client.get("/v1/dead-letters", params={"before_id": page["next_before_id"]}).json()

    assert response["accepted"] == 2
    reasons = {r["index"]: r["reason"] for r in response["rejected"]}
    assert set(reasons) == {2, 3, 4, 5}
    assert "a date in the future" in reasons[2]
    assert "before 1990-01-01" in reasons[3]
    assert "sales on a closed day" in reasons[4]
    assert "more than 1,000,000 in a day" in reasons[5]
    letters = listed["dead_letters"]
    assert [json.loads(letter["payload"])["store_id"] for letter in letters] == [6, 5, 4, 3]
    assert [letter["reason"] for letter in letters] == [reasons[i] for i in (5, 4, 3, 2)]
    assert {letter["source"] for letter in letters} == {"api"}
    assert listed["next_before_id"] is None
    assert len(page["dead_letters"]) == 2
    assert [d["id"] for d in page["dead_letters"] + rest["dead_letters"]] == [
        d["id"] for d in letters
    ]


def test_one_active_training_job_per_series(client: TestClient, loaded_engine: Engine) -> None:
    with loaded_engine.begin() as connection:
        training_job_records.create_training_job(connection, "running-job", "local", [1, 2])

    overlapping = client.post("/v1/training-jobs", json={"stores": [2, 3]})
    everything = client.post("/v1/training-jobs", json={"stores": "all"})

    assert overlapping.status_code == everything.status_code == 409
    long_reason = client.post("/v1/training-jobs", json={"stores": [5], "reason": "x" * 501})
    assert long_reason.status_code == 422
    assert overlapping.json()["detail"] == (
        "training job running-job (queued) already trains stores [1, 2]; wait for it to finish"
    )
    (listed,) = client.get("/v1/training-jobs").json()["jobs"]
    assert listed["id"] == "running-job"
    assert dt.datetime.fromisoformat(listed["created_at"]).utcoffset() == dt.timedelta(0)


def test_the_servers_sqlite_connections_keep_a_small_page_cache(settings: Settings) -> None:
    # Each pooled connection keeps its page cache: at the bulk writers' 64 MiB, a worker's RSS
    # grew by up to 64 MiB per connection once GET /v1/status had scanned the sales table.
    bulk = make_engine(settings.effective_database_url)
    migrate(bulk)
    with bulk.connect() as connection:
        loading = connection.exec_driver_sql("PRAGMA cache_size").scalar_one()
    bulk.dispose()
    with TestClient(create_app(settings), headers=AUTH) as client:
        assert client.get("/v1/status").status_code == 200
        engine = client.app.state.read_engine  # type: ignore[attr-defined]
        with engine.connect() as connection:
            served = connection.exec_driver_sql("PRAGMA cache_size").scalar_one()
    assert (served, loading) == (-SQLITE_READER_CACHE_KIB, -SQLITE_BULK_CACHE_KIB)
