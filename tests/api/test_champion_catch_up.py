"""The API serves a retrain's champion as soon as the job ends, not a poll interval later.

Real training jobs (seasonal naive, one window) register real versions into the embedded
MLflow registry of a fresh home; the API under test runs its own poller thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from sfmlops.adapters.db import training_job_records
from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.services import loading
from sfmlops.services.api import create_app
from sfmlops.services.model_training import TrainingRequest, run_training_job
from sfmlops.settings import Settings
from tests.support.api_tokens import AUTH, TOKEN
from tests.support.model_registry import train_champion

CATCH_UP_SECONDS = 20  # far below the idle poll of an hour these APIs are given
pytestmark = pytest.mark.integration

RETRAIN = TrainingRequest(models=["seasonal_naive"], windows=1, store_ids=[1], force=True)


@pytest.fixture
def home(tmp_path: Path, rossmann_slice: Path) -> Iterator[tuple[Path, Engine]]:
    """A home of its own (these tests move the alias): champion version 1 of stores 1-2."""
    home = tmp_path / "home"
    settings = Settings(_env_file=None, home=home)
    settings.ensure_home()
    engine = make_engine(settings.effective_database_url)
    migrate(engine)
    loading.load_folder(engine, rossmann_slice)
    train_champion(settings, engine, [1, 2])
    yield home, engine
    engine.dispose()


def _api(home: Path, engine: Engine, training_poll_seconds: float) -> TestClient:
    settings = Settings(
        _env_file=None,
        home=home,
        api_token=SecretStr(TOKEN),
        model_poll_seconds=3600,
        model_poll_training_seconds=training_poll_seconds,
    )
    return TestClient(create_app(settings, engine=engine), headers=AUTH)


def _serving(client: TestClient) -> str:
    response = client.get("/v1/models/champion", params={"store_id": 1})
    assert response.status_code == 200, response.text
    version: str = response.json()["version"]
    return version


def _record_job(engine: Engine, job_id: str) -> None:
    with engine.begin() as connection:
        training_job_records.create_training_job(connection, job_id, "local", [1], "test")


def test_answering_that_a_job_succeeded_serves_its_champion_at_once(
    home: tuple[Path, Engine],
) -> None:
    folder, engine = home
    # No poll would notice within the test: only the job route can.
    with _api(folder, engine, training_poll_seconds=3600) as client:
        assert _serving(client) == "1"
        _record_job(engine, "job-a")
        run_training_job(
            Settings(_env_file=None, home=folder), engine, RETRAIN, "sequential", job_id="job-a"
        )
        assert _serving(client) == "1"

        job = client.get("/v1/training-jobs/job-a").json()

        assert (job["status"], job["model_version"]) == ("succeeded", "2")
        assert _serving(client) == "2"
        assert client.get("/v1/status").json()["champion_version"] == "2"
        assert client.get("/v1/stores/1/forecast").json()["model_version"] == "2"


def test_listing_jobs_serves_the_newest_jobs_champion(
    home: tuple[Path, Engine],
) -> None:
    folder, engine = home
    settings = Settings(_env_file=None, home=folder)
    with _api(folder, engine, training_poll_seconds=3600) as client:
        for job_id in ("job-a", "job-b"):
            _record_job(engine, job_id)
            run_training_job(settings, engine, RETRAIN, "sequential", job_id=job_id)
        assert _serving(client) == "1"

        listed = client.get("/v1/training-jobs").json()["jobs"]

        assert [job["model_version"] for job in listed] == ["3", "2"]
        assert _serving(client) == "3"


def test_the_poller_checks_often_while_a_job_is_active_and_not_otherwise(
    home: tuple[Path, Engine],
) -> None:
    folder, engine = home
    settings = Settings(_env_file=None, home=folder)
    with _api(folder, engine, training_poll_seconds=0.2) as client:
        # The alias moves with no training job on record: only the hourly poll would see it.
        train_champion(settings, engine, [1, 2])
        time.sleep(1.5)
        assert _serving(client) == "1"

        _record_job(engine, "job-a")  # queued: active, though it never runs here
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while _serving(client) != "2" and time.monotonic() < deadline:
            time.sleep(0.1)

        assert _serving(client) == "2"
