"""Training on a separately started Ray head: as a client (SFMLOPS_RAY_ADDRESS) and as a Ray job.

This is how training reaches a KubeRay cluster: `ray start --head` stands in for the head pod
(same Ray, same job API on the dashboard port), here on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from sqlalchemy import Engine

from sfmlops.adapters import job_runners
from sfmlops.adapters import mlflow_registry as registry
from sfmlops.adapters.db import training_job_records
from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.services import loading, training_jobs
from sfmlops.settings import Settings
from tests.support.network import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
RAY = Path(sys.executable).with_name("ray")


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, str]]:
    """`ray start --head` on 127.0.0.1 with its job API; yields (GCS address, job API URL).

    The head requires a token (Ray's token authentication, as a cluster should): Ray's
    default token file, ~/.ray/auth_token, created when missing. Not a token of our own:
    this process may already have read that file for an earlier local Ray, and Ray keeps
    the first token it loads.
    """
    port, dashboard = free_port(), free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="sfr-", dir="/tmp"))  # socket paths must be short
    subprocess.run(
        [str(RAY), "get-auth-token", "--generate"], capture_output=True, timeout=120, check=True
    )
    auth = {"RAY_AUTH_MODE": "token"}
    env = (
        os.environ
        | auth
        | {
            "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "PYTHONUNBUFFERED": "1",  # its log shows "Ray runtime started." when it is
        }
    )
    # --block keeps `ray start` in the foreground as the parent of the head's processes, in a
    # session of its own: stopping it stops this head only. `ray stop` would stop every Ray on
    # the machine, the local Ray another xdist worker is training on included (its driver then
    # exits when its GCS is gone, taking the worker with it).
    log_path = temp_dir / "ray-start.log"
    with log_path.open("wb") as log:
        head = subprocess.Popen(
            [
                str(RAY),
                "start",
                "--head",
                "--block",
                f"--port={port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=2",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                # Its job agent's port is 52365 unless given: another Ray on the machine (a local
                # one of another xdist worker) may hold that one, and jobs then find no agent.
                f"--dashboard-agent-listen-port={free_port()}",
                f"--temp-dir={temp_dir}",
                "--disable-usage-stats",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    saved = {key: os.environ.get(key) for key in auth}
    try:
        wait_until(
            lambda: _head_started(head, log_path), timeout=300, what="`ray start --head` to start"
        )
        os.environ.update(auth)
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _stop_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _head_started(head: subprocess.Popen[bytes], log_path: Path) -> bool:
    log = log_path.read_text(errors="replace")
    if head.poll() is not None:
        pytest.fail(f"`ray start --head` exited with {head.returncode}:\n{log[-3000:]}")
    return "Ray runtime started." in log


def _stop_head(head: subprocess.Popen[bytes]) -> None:
    """SIGTERM `ray start --block` (it stops the processes it started), then SIGKILL what is
    left of its session (job drivers and workers outlive a head otherwise)."""
    head.terminate()
    deadline = time.monotonic() + 60
    # Not reaped until the group is killed: its pid, the group's id, stays ours till then.
    while _running(head.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=30)


def _running(pid: int) -> bool:
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


@pytest.fixture(scope="module")
def loaded(
    tmp_path_factory: pytest.TempPathFactory, rossmann_slice: Path, mlflow_server: str
) -> Iterator[tuple[Path, Engine]]:
    home = tmp_path_factory.mktemp("home")
    engine = make_engine(f"sqlite:///{home / 'sfmlops.db'}")
    migrate(engine)
    loading.load_folder(engine, rossmann_slice)
    yield home, engine
    engine.dispose()


def environment(home: Path, mlflow_server: str, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SFMLOPS_") and key != "RAY_ADDRESS"
    }
    return env | {
        "SFMLOPS_HOME": str(home),
        "SFMLOPS_MLFLOW_TRACKING_URI": mlflow_server,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **extra,
    }


def champion_version(mlflow_server: str) -> str | None:
    client = registry.connect(Settings(_env_file=None, mlflow_tracking_uri=mlflow_server))
    found = registry.version_with_alias(client, registry.CHAMPION)
    return found.version if found else None


def test_train_runs_on_a_ray_head_given_by_address(
    ray_head: tuple[str, str], loaded: tuple[Path, Engine], mlflow_server: str
) -> None:
    address, _ = ray_head
    home, _ = loaded

    result = subprocess.run(
        [sys.executable, "-m", "sfmlops", "train", "--models", "seasonal_naive", "--windows", "1"],
        env=environment(home, mlflow_server, SFMLOPS_RAY_ADDRESS=address),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "as champion" in " ".join(result.stdout.split())
    assert champion_version(mlflow_server) is not None
    # The local-Ray temp dir under HOME was never created: the head did the work.
    assert not (home / "ray").exists()


def test_a_job_submitted_to_the_head_reports_back_and_registers_a_version(
    ray_head: tuple[str, str],
    loaded: tuple[Path, Engine],
    mlflow_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, jobs_url = ray_head
    home, engine = loaded
    for key, value in environment(home, mlflow_server).items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None, ray_jobs_url=jobs_url)
    runner = job_runners.make_runner(settings)
    assert runner.name == "ray-jobs"
    before = champion_version(mlflow_server)

    reason = "store 3 opened a new wing (a caller's words, quoted as they are)"
    submitted = training_jobs.submit_training_job(engine, runner, stores=[3], reason=reason)

    deadline = time.monotonic() + 600
    job = None
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            job = training_job_records.get_training_job(connection, submitted.id)
        assert job is not None
        job = training_jobs.refresh_job(engine, runner, job)
        if job.status in ("succeeded", "failed"):
            break
        time.sleep(2)
    assert job is not None
    logs = (
        runner.logs(submitted.runner_job_id or "")
        if isinstance(runner, job_runners.RayJobsRunner)
        else ""
    )
    assert job.status == "succeeded", f"{job}\n{logs}"
    assert job.mlflow_run_id
    assert job.progress_done == job.progress_total == 1
    assert job.model_version == champion_version(mlflow_server)
    assert job.model_version != before
    assert job.reason == reason
    tags = mlflow.MlflowClient(mlflow_server).get_run(job.mlflow_run_id).data.tags
    assert tags["sfmlops.reason"] == reason


def test_a_full_training_job_uses_its_own_cluster_not_a_client_address(
    ray_head: tuple[str, str], loaded: tuple[Path, Engine], mlflow_server: str
) -> None:
    # The chart may give every pod SFMLOPS_RAY_ADDRESS=ray://head:10001 (Ray Client), the Ray
    # pods included. A job's driver must connect to the cluster it runs on (RAY_ADDRESS, set by
    # Ray's job supervisor): here the client address answers nothing, so a driver that used it
    # would fail.
    from ray.job_submission import JobStatus, JobSubmissionClient  # noqa: PLC0415

    _, jobs_url = ray_head
    home, _ = loaded
    client = JobSubmissionClient(jobs_url)
    env = {
        "SFMLOPS_HOME": str(home),
        "SFMLOPS_MLFLOW_TRACKING_URI": mlflow_server,
        "SFMLOPS_RAY_ADDRESS": f"ray://127.0.0.1:{free_port()}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    submission = client.submit_job(
        entrypoint="sfmlops train --models seasonal_naive --windows 1 --executor ray",
        runtime_env={"env_vars": env},
    )
    deadline = time.monotonic() + 600
    status = client.get_job_status(submission)
    while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, "the job did not finish in 10 minutes"
        time.sleep(2)
        status = client.get_job_status(submission)
    logs = client.get_job_logs(submission)
    assert status == JobStatus.SUCCEEDED, logs
    assert "as champion" in " ".join(logs.split())
