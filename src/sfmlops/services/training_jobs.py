"""Training jobs: records in `training_jobs`, and the runners that execute them.

A job is `sfmlops train --job-id ID [--stores ...]` run somewhere else than the caller:
in a local worker process (`local`) or on a Ray cluster through its job API (`ray-jobs`,
how training reaches KubeRay). The job reports its own status and progress into the
database; the runner is asked only when a job went quiet, to tell a crash from a run.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from sfmlops.adapters.db import repository
from sfmlops.adapters.db.engine import TRAINING_JOBS_LOCK_KEY, database_lock
from sfmlops.settings import Settings

RunnerState = Literal["running", "succeeded", "failed", "gone", "unknown"]
"""`gone`: the runner has no such live job; `unknown`: the runner could not be asked."""
ACTIVE_STATUSES = ("queued", "running")
ACTIVE_JOBS_SCANNED = 200  # the newest jobs checked for overlap; older ones are long finished


class JobRunner(Protocol):
    """Starts a CLI command as a job and tells whether it is still alive."""

    name: str

    def submit(self, job_id: str, arguments: Sequence[str]) -> str:
        """Start `sfmlops <arguments>`; returns the runner's id for the job."""
        ...

    def state(self, runner_job_id: str) -> RunnerState:
        """What the runner knows of the job."""
        ...


class LocalJobRunner:
    """Runs each job as a `python -m sfmlops` process on this machine, logging to HOME/jobs."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.logs = settings.home / "jobs"
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def submit(self, job_id: str, arguments: Sequence[str]) -> str:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{job_id}.log").open("ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "sfmlops", *arguments],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives a restart of the API that started it
            )
        self._children[child.pid] = child
        return f"pid:{child.pid}"

    def state(self, runner_job_id: str) -> RunnerState:
        pid = int(runner_job_id.removeprefix("pid:"))
        child = self._children.get(pid)
        if child is not None:
            code = child.poll()  # also reaps it, so a finished child is no zombie
            if code is None:
                return "running"
            return "succeeded" if code == 0 else "failed"
        # Started by an earlier process of ours: alive unless gone or a zombie.
        try:
            status = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except (OSError, IndexError):
            return "gone"
        return "gone" if status == "Z" else "running"

    def log_path(self, job_id: str) -> Path:
        """Where a job's output goes."""
        return self.logs / f"{job_id}.log"


DRIVER_CPUS = 1
"""CPUs a training job's driver reserves on the Ray cluster."""


class RayJobsRunner:
    """Submits jobs to a Ray cluster's head through the Ray Job Submission API."""

    name = "ray-jobs"

    def __init__(self, settings: Settings) -> None:
        if not settings.ray_jobs_url:
            raise ValueError(
                "the ray-jobs runner needs SFMLOPS_RAY_JOBS_URL (e.g. http://127.0.0.1:8265)"
            )
        from ray.job_submission import JobSubmissionClient  # noqa: PLC0415 - heavy, only here

        self.client = JobSubmissionClient(settings.ray_jobs_url)
        self.env_vars = _job_environment(settings)

    def submit(self, job_id: str, arguments: Sequence[str]) -> str:
        return str(
            self.client.submit_job(
                entrypoint=shlex.join(["sfmlops", *arguments]),
                submission_id=f"sfmlops-{job_id}",
                # The driver takes a CPU, so Ray places it on a node that has one: a worker (the
                # chart's head offers none), where the training runs, not on the head that
                # coordinates the cluster. Its fan-out tasks use the workers' other CPUs.
                entrypoint_num_cpus=DRIVER_CPUS,
                runtime_env={"env_vars": self.env_vars},
                metadata={"sfmlops_job_id": job_id},
            )
        )

    def state(self, runner_job_id: str) -> RunnerState:
        from ray.job_submission import JobStatus  # noqa: PLC0415

        try:
            status = self.client.get_job_status(runner_job_id)
        except RuntimeError as error:  # the head answered, but knows no such job
            return "gone" if "does not exist" in str(error) else "unknown"
        except Exception:  # the head could not be reached: nothing to conclude
            return "unknown"
        if status in (JobStatus.PENDING, JobStatus.RUNNING):
            return "running"
        return "succeeded" if status == JobStatus.SUCCEEDED else "failed"

    def logs(self, runner_job_id: str) -> str:
        """The job's output as the Ray head kept it."""
        return str(self.client.get_job_logs(runner_job_id))


def make_runner(settings: Settings) -> JobRunner:
    """The configured runner: `ray-jobs` when SFMLOPS_RAY_JOBS_URL is set, else `local`."""
    return RayJobsRunner(settings) if settings.ray_jobs_url else LocalJobRunner(settings)


def _job_environment(settings: Settings) -> dict[str, str]:
    """Settings a remote job needs that its cluster may lack; secrets are left to the cluster.

    A database URL with a password is not sent (Ray keeps runtime environments in its job
    table); on Kubernetes the Ray pods read it from their Secret.
    """
    env = {
        "SFMLOPS_MLFLOW_TRACKING_URI": settings.effective_mlflow_tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    database_url = settings.effective_database_url
    if make_url(database_url).password is None:
        env["SFMLOPS_DATABASE_URL"] = database_url
    if settings.as_of:
        env["SFMLOPS_AS_OF"] = settings.as_of.isoformat()
    if "SFMLOPS_HOME" in os.environ:
        env["SFMLOPS_HOME"] = str(settings.home)
    return env


@dataclass(frozen=True)
class SubmittedJob:
    id: str
    runner: str
    runner_job_id: str | None


class JobConflictError(RuntimeError):
    """A queued or running job already trains some of the requested stores."""


def submit_training_job(
    engine: Engine, runner: JobRunner, stores: Sequence[int] | None
) -> SubmittedJob:
    """Record a queued job and hand it to the runner; a runner failure fails the job, loudly.

    One active job per series: a job is refused while a queued or running one trains any of
    its stores (a job of all stores overlaps every job).

    Raises:
        JobConflictError: An active job already trains some of these stores.
        RuntimeError: When the runner could not start the job (the record says why).
    """
    job_id = uuid.uuid4().hex
    # The check and the record under one lock: two submissions at once cannot both pass.
    with database_lock(engine, TRAINING_JOBS_LOCK_KEY, "training-jobs"):
        with engine.connect() as connection:
            active = [
                job
                for job in repository.list_training_jobs(connection, ACTIVE_JOBS_SCANNED)
                if job["status"] in ACTIVE_STATUSES and _overlap(job["stores"], stores)
            ]
        # A job whose process died without a word is not active any more.
        active = [
            job
            for job in (refresh_job(engine, runner, job) for job in active)
            if job["status"] in ACTIVE_STATUSES
        ]
        if active:
            job = active[0]
            trains = "all stores" if job["stores"] is None else f"stores {job['stores'][:20]}"
            raise JobConflictError(
                f"training job {job['id']} ({job['status']}) already trains {trains}; "
                "wait for it to finish"
            )
        with engine.begin() as connection:
            repository.create_training_job(connection, job_id, runner.name, stores)
    arguments = ["train", "--job-id", job_id]
    if stores:
        arguments += ["--stores", ",".join(str(store) for store in stores)]
    try:
        runner_job_id = runner.submit(job_id, arguments)
    except Exception as error:
        with engine.begin() as connection:
            repository.update_training_job(
                connection,
                job_id,
                status="failed",
                error=f"could not start the job: {error}",
                finished_at=_now(),
            )
        raise RuntimeError(f"could not start training job {job_id}: {error}") from error
    with engine.begin() as connection:
        repository.update_training_job(connection, job_id, runner_job_id=runner_job_id)
    return SubmittedJob(id=job_id, runner=runner.name, runner_job_id=runner_job_id)


def _overlap(running: Sequence[int] | None, requested: Sequence[int] | None) -> bool:
    if running is None or requested is None:
        return True
    return not set(running).isdisjoint(requested)


def refresh_job(engine: Engine, runner: JobRunner, job: dict[str, Any]) -> dict[str, Any]:
    """Mark an active job failed when its runner says it ended without reporting."""
    if (
        job["status"] not in ACTIVE_STATUSES
        or not job.get("runner_job_id")
        or job["runner"] != runner.name
    ):
        return job
    state = runner.state(job["runner_job_id"])
    if state in ("running", "unknown"):
        return job
    with engine.begin() as connection:
        current = repository.get_training_job(connection, job["id"]) or job
        if current["status"] not in ACTIVE_STATUSES:
            return current  # it reported in the meantime
        repository.update_training_job(
            connection,
            job["id"],
            status="failed",
            error=f"the job process ended without reporting a result (runner says {state})",
            finished_at=_now(),
        )
        return repository.get_training_job(connection, job["id"]) or current


class JobReporter:
    """What a running job writes about itself: start, progress, outcome."""

    def __init__(self, engine: Engine, job_id: str) -> None:
        self.engine = engine
        self.job_id = job_id
        with engine.connect() as connection:
            if repository.get_training_job(connection, job_id) is None:
                raise ValueError(f"unknown training job {job_id}")

    def started(self, total: int) -> None:
        self._update(status="running", started_at=_now(), progress_total=total, progress_done=0)

    def progress(self, done: int, total: int | None = None) -> None:
        fields: dict[str, Any] = {"progress_done": done}
        if total is not None:
            fields["progress_total"] = total
        self._update(**fields)

    def tracked(self, mlflow_run_id: str) -> None:
        self._update(mlflow_run_id=mlflow_run_id)

    def succeeded(self, model_version: str | None, warnings: str | None = None) -> None:
        self._update(
            status="succeeded", model_version=model_version, finished_at=_now(), error=warnings
        )

    def failed(self, error: str) -> None:
        self._update(status="failed", error=error, finished_at=_now())

    def _update(self, **fields: Any) -> None:
        with self.engine.begin() as connection:
            repository.update_training_job(connection, self.job_id, **fields)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
