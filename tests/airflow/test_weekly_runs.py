"""The weekly DAG run for real (dag.test) against a real sfmlops API, or none."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dag_support import API_TOKEN, AUTH, ROOT, DagRunner, free_port, running_api, sfmlops

WEEKLY = "sfmlops_weekly_train_forecast"
SLICE_STORES = (1, 2, 3, 4, 5, 6)
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

    jobs = httpx.get(f"{url}/v1/training-jobs", headers=AUTH).json()["jobs"]
    assert len(jobs) == 1
    job = jobs[0]
    assert job["status"] == "failed"
    assert job["error"]
    assert job["reason"].startswith("weekly training (sfmlops_weekly_train_forecast ")
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

    assert httpx.get(f"{url}/v1/training-jobs", headers=AUTH).json()["jobs"] == []
    # A 401 would be refused again: no retries.
    assert result["tasks"]["submit_training_job"] == {"state": "failed", "try_number": 1}
    # The task's first call (the champion before the job) is already refused: reads need the
    # token too.
    assert (
        "sfmlops API refused GET /v1/models/champion (401): missing or invalid bearer token"
        in result["last_failure"]["error"]
    )


def test_the_model_set_reaches_the_api_which_refuses_an_unknown_name(
    run_dag: DagRunner, sfmlops_api: tuple[str, Path]
) -> None:
    url, _ = sfmlops_api

    result = run_dag(
        WEEKLY,
        conf={"models": ["gbm", "arima"]},
        SFMLOPS_API_URL=url,
        SFMLOPS_API_TOKEN=API_TOKEN,
        SFMLOPS_TRAINING_MODELS="gbm,prophet",  # the param's default; the run's conf wins
    )

    assert httpx.get(f"{url}/v1/training-jobs", headers=AUTH).json()["jobs"] == []
    # A 422 would be refused again: no retries.
    assert result["tasks"]["submit_training_job"] == {"state": "failed", "try_number": 1}
    error = result["last_failure"]["error"]
    assert "sfmlops API refused POST /v1/training-jobs (422)" in error
    assert "unknown model 'arima'; choose from gbm, prophet, seasonal_naive" in error


@pytest.fixture
def loaded_api(tmp_path: Path, sfmlops_cli: str) -> Iterator[tuple[str, Path]]:
    """A real API over 6 stores' last 200 days (enough for 3 backtest windows), no model yet.

    It looks for a new champion every second, as a test cannot wait for the default 30 s.
    """
    folder = tmp_path / "slice"
    folder.mkdir()
    bundled = ROOT / "src" / "sfmlops" / "datasets" / "rossmann"
    stores = {str(store) for store in SLICE_STORES}
    for name in ("store.csv", "store_states.csv"):
        with (bundled / name).open() as source, (folder / name).open("w") as out:
            rows = csv.reader(source)
            writer = csv.writer(out)
            writer.writerow(next(rows))
            writer.writerows(row for row in rows if row[0] in stores)
    with (
        gzip.open(bundled / "train.csv.gz", "rt") as source,
        gzip.open(folder / "train.csv.gz", "wt") as out,
    ):
        rows = csv.reader(source)
        header = next(rows)
        date = header.index("Date")
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(row for row in rows if row[0] in stores and row[date] >= "2014-11-26")
    home = tmp_path / "sfmlops"
    sfmlops(sfmlops_cli, home, "load-data", "--path", str(folder))
    with running_api(
        sfmlops_cli, home, tmp_path / "serve.log", SFMLOPS_MODEL_POLL_SECONDS="1"
    ) as url:
        yield url, home


def test_a_weekly_run_trains_registers_and_writes_every_series_forecasts(
    run_dag: DagRunner, loaded_api: tuple[str, Path]
) -> None:
    url, home = loaded_api

    result = run_dag(
        WEEKLY,
        conf={"horizon_days": 7},
        SFMLOPS_API_URL=url,
        SFMLOPS_API_TOKEN=API_TOKEN,
        SFMLOPS_HOME=str(home),
        SFMLOPS_TRAINING_TIMEOUT_SECONDS="600",
    )

    assert result["state"] == "success", result["log"][-5000:]
    assert {task["state"] for task in result["tasks"].values()} == {"success"}
    jobs = httpx.get(f"{url}/v1/training-jobs", headers=AUTH).json()["jobs"]
    assert [(job["status"], job["model_version"]) for job in jobs] == [("succeeded", "1")]
    assert httpx.get(f"{url}/v1/models/champion", headers=AUTH).json()["version"] == "1"
    latest = httpx.get(f"{url}/v1/forecasts/latest", headers=AUTH).json()
    assert latest["model_version"] == "1"
    assert len(latest["forecasts"]) == len(SLICE_STORES) * 7
    assert {row["store_id"] for row in latest["forecasts"]} == set(SLICE_STORES)
