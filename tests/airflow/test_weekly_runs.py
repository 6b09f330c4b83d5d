"""The weekly DAG run for real (dag.test) against a real sfmlops API, or none."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from conftest import API_TOKEN, DagRunner, free_port

WEEKLY = "sfmlops_weekly_train_forecast"
DOWNSTREAM = ("wait_for_training_job", "check_champion", "write_forecasts", "verify_forecasts")


def test_with_the_api_down_the_run_fails_after_its_retries(run_dag: DagRunner) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    result = run_dag(WEEKLY, SFMLOPS_API_URL=url)

    assert result["state"] == "failed"
    submit = result["tasks"]["submit_training_job"]
    assert submit == {"state": "failed", "try_number": 3}  # the first try and 2 retries
    assert {result["tasks"][task]["state"] for task in DOWNSTREAM} == {"upstream_failed"}
    failure = result["last_failure"]
    assert (failure["dag_id"], failure["task_id"], failure["try_number"]) == (
        WEEKLY,
        "submit_training_job",
        3,
    )
    assert f"cannot reach the sfmlops API at {url} (GET /v1/models/champion)" in failure["error"]


def test_a_failed_training_job_fails_the_wait_with_the_jobs_error(
    run_dag: DagRunner, sfmlops_api: tuple[str, Path]
) -> None:
    url, _ = sfmlops_api
    # The API's address and token from an Airflow connection (here in the environment).
    connection = {"conn_type": "http", "host": url, "password": API_TOKEN}

    result = run_dag(WEEKLY, conf={"stores": None}, AIRFLOW_CONN_SFMLOPS_API=json.dumps(connection))

    jobs = httpx.get(f"{url}/v1/training-jobs").json()["jobs"]
    assert len(jobs) == 1
    job = jobs[0]
    assert job["status"] == "failed"
    assert job["error"]
    assert result["state"] == "failed"
    assert result["tasks"]["submit_training_job"]["state"] == "success"
    # A failed job is final: the sensor fails at once instead of polling through retries.
    assert result["tasks"]["wait_for_training_job"] == {"state": "failed", "try_number": 1}
    assert result["tasks"]["check_champion"]["state"] == "upstream_failed"
    failure = result["last_failure"]
    assert failure["task_id"] == "wait_for_training_job"
    assert f"training job {job['id']} failed: {job['error']}" in failure["error"]


def test_a_refused_request_fails_at_once_with_the_apis_reason(
    run_dag: DagRunner, sfmlops_api: tuple[str, Path]
) -> None:
    url, _ = sfmlops_api

    result = run_dag(WEEKLY, SFMLOPS_API_URL=url, SFMLOPS_API_TOKEN="not-the-token")

    assert httpx.get(f"{url}/v1/training-jobs").json()["jobs"] == []
    # A 401 would be refused again: no retries.
    assert result["tasks"]["submit_training_job"] == {"state": "failed", "try_number": 1}
    assert (
        "sfmlops API refused POST /v1/training-jobs (401): missing or invalid bearer token"
        in result["last_failure"]["error"]
    )
