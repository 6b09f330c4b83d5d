"""Training job records and what a running job reports about itself."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from sfmlops.adapters.db import training_job_records
from sfmlops.services.training_jobs import JobReporter, refresh_job

pytestmark = pytest.mark.integration


class GoneRunner:
    """A runner whose jobs have all ended (what a crashed job looks like to refresh_job)."""

    name = "local"

    def submit(self, job_id: str, arguments: object) -> str:
        raise AssertionError("not used")

    def state(self, runner_job_id: str) -> str:
        return "gone"


def test_a_job_reports_start_progress_and_outcome(engine: Engine) -> None:
    with engine.begin() as connection:
        training_job_records.create_training_job(connection, "job-1", "local", [7, 4])
    reporter = JobReporter(engine, "job-1")

    reporter.started(total=2)
    reporter.progress(1)
    reporter.tracked("run-abc")
    reporter.succeeded("3", warnings="store 7: kept its previous model")

    with engine.connect() as connection:
        job = training_job_records.get_training_job(connection, "job-1")
    assert job is not None
    assert (job.status, job.progress_done, job.progress_total) == ("succeeded", 1, 2)
    assert (job.stores, job.mlflow_run_id, job.model_version) == ([4, 7], "run-abc", "3")
    assert job.started_at is not None
    assert job.finished_at is not None
    assert job.error == "store 7: kept its previous model"


def test_jobs_are_listed_newest_first(engine: Engine) -> None:
    with engine.begin() as connection:
        for job_id in ("first", "second", "third"):
            training_job_records.create_training_job(connection, job_id, "local", None)

    with engine.connect() as connection:
        assert [j.id for j in training_job_records.list_training_jobs(connection, limit=2)] == [
            "third",
            "second",
        ]


def test_a_job_that_ended_without_reporting_is_failed(engine: Engine) -> None:
    with engine.begin() as connection:
        training_job_records.create_training_job(connection, "crashed", "local", None)
        training_job_records.update_training_job(
            connection, "crashed", status="running", runner_job_id="pid:1234567"
        )
        job = training_job_records.get_training_job(connection, "crashed")
    assert job is not None

    refreshed = refresh_job(engine, GoneRunner(), job)

    assert refreshed.status == "failed"
    assert "ended without reporting" in refreshed.error


def test_an_unknown_job_cannot_report(engine: Engine) -> None:
    with pytest.raises(ValueError, match="unknown training job"):
        JobReporter(engine, "nope")
