"""Who may call the API: tokens on every endpoint but the probes, read vs write, the audit log,
the retrain limit."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from sfmlops.adapters.db import audit
from sfmlops.services.api import create_app
from sfmlops.settings import Settings
from tests.support.api_tokens import READ_TOKEN, TOKEN

pytestmark = pytest.mark.integration
WRITE = {"Authorization": f"Bearer {TOKEN}"}
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
RECORD = {"store_id": 1, "sales_date": "2015-06-14", "sales": 5000, "customers": 500, "open": 1,
          "promo": 0, "state_holiday": "0", "school_holiday": 0}  # fmt: skip
READ_PATHS = (
    "/v1/status",
    "/v1/stores",
    "/v1/stores/1",
    "/v1/stores/1/sales",
    "/v1/stores/1/forecast",
    "/v1/forecasts/latest",
    "/v1/models/champion",
    "/v1/training-jobs",
    "/v1/dead-letters",
    "/docs",
    "/openapi.json",
)


@pytest.fixture
def anonymous(settings: Settings, loaded_engine: Engine) -> TestClient:
    """A client of the app that sends no token unless told."""
    with TestClient(
        create_app(settings, engine=loaded_engine), raise_server_exceptions=False
    ) as client:
        yield client


def test_only_the_probes_and_metrics_answer_without_a_token(anonymous: TestClient) -> None:
    for path in ("/health", "/ready", "/metrics"):
        assert anonymous.get(path).status_code in (200, 503), path
    for path in READ_PATHS:
        response = anonymous.get(path)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == "Bearer"
    wrong = anonymous.get("/v1/stores", headers={"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 401
    assert anonymous.post("/v1/forecast", json={}).status_code == 401
    assert anonymous.post("/v1/sales", json={"records": [RECORD]}).status_code == 401


def test_the_read_token_reads_but_cannot_write(anonymous: TestClient) -> None:
    for path in READ_PATHS:
        assert anonymous.get(path, headers=READ).status_code not in (401, 403), path
    # POST /v1/forecast computes only: a read (here 503, no champion is loaded).
    forecast = anonymous.post("/v1/forecast", json={"series": [{"store_id": 1}]}, headers=READ)
    sales = anonymous.post("/v1/sales", json={"records": [RECORD]}, headers=READ)
    job = anonymous.post("/v1/training-jobs", json={"stores": [1]}, headers=READ)

    assert forecast.status_code not in (401, 403)
    assert sales.status_code == job.status_code == 403
    assert "read-only token" in sales.json()["detail"]
    day = {"start": "2015-06-14", "end": "2015-06-14"}
    assert anonymous.get("/v1/stores/1/sales", params=day, headers=READ).json()["days"] == []


def test_writes_are_audited_with_the_caller(anonymous: TestClient, loaded_engine: Engine) -> None:
    anonymous.post("/v1/sales", json={"records": [RECORD]}, headers=WRITE)
    anonymous.post(
        "/v1/sales",
        json={"records": [RECORD, RECORD | {"store_id": -1}]},
        headers=WRITE | {"X-Sfmlops-User": "alice@example.com"},
    )
    # A read-token caller cannot pass itself off as a user.
    anonymous.get("/v1/stores", headers=READ | {"X-Sfmlops-User": "mallory"})

    with loaded_engine.connect() as connection:
        events = audit.list_events(connection)

    assert [(e["actor"], e["action"], e["detail"]) for e in events] == [
        ("alice@example.com via api-token", "sales.ingest",
         {"records": 2, "accepted": 1, "rejected": 1}),
        ("api-token", "sales.ingest", {"records": 1, "accepted": 1, "rejected": 0}),
    ]  # fmt: skip
    assert events[0]["client"] == "testclient"
    assert events[0]["occurred_at"] is not None


def test_retrains_are_limited_per_user(
    tmp_path_factory: pytest.TempPathFactory, loaded_engine: Engine
) -> None:
    settings = Settings(
        _env_file=None,
        home=tmp_path_factory.mktemp("limits"),
        api_token=SecretStr(TOKEN),
        retrain_limit_per_hour=2,
    )
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=50)
    with loaded_engine.begin() as connection:
        for minutes in (0, 5):
            audit.record(
                connection,
                "alice via api-token",
                "training_job.submit",
                occurred_at=recent + dt.timedelta(minutes=minutes),
            )
        # Older than an hour: no longer counted.
        audit.record(
            connection,
            "bob via api-token",
            "training_job.submit",
            occurred_at=recent - dt.timedelta(hours=1),
        )
        audit.record(connection, "bob via api-token", "training_job.submit")
    with TestClient(create_app(settings, engine=loaded_engine)) as client:
        alice = client.post(
            "/v1/training-jobs",
            json={"stores": [4242]},
            headers=WRITE | {"X-Sfmlops-User": "alice"},
        )
        # Bob is under his limit: the request goes on (and stops at the unknown store).
        bob = client.post(
            "/v1/training-jobs", json={"stores": [4242]}, headers=WRITE | {"X-Sfmlops-User": "bob"}
        )

    assert alice.status_code == 429
    assert "alice via api-token started 2 training jobs in the last hour" in alice.json()["detail"]
    assert 590 <= int(alice.headers["Retry-After"]) <= 660  # the oldest leaves the hour in ~10 min
    assert bob.status_code == 404


def test_without_a_token_configured_the_api_is_open(
    tmp_path_factory: pytest.TempPathFactory, loaded_engine: Engine
) -> None:
    # What `sfmlops serve` allows on loopback only (tests/e2e/test_serve.py).
    settings = Settings(_env_file=None, home=tmp_path_factory.mktemp("open"))
    with TestClient(create_app(settings, engine=loaded_engine)) as client:
        assert client.get("/v1/stores/1").status_code == 200
        assert client.post("/v1/sales", json={"records": [RECORD]}).status_code == 200
    with loaded_engine.connect() as connection:
        assert [e["actor"] for e in audit.list_events(connection)] == ["loopback"]
