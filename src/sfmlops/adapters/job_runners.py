"""Job runners: start a `sfmlops` command as a job somewhere else, and tell whether it lives.

`local` runs it as a process on this machine; `ray-jobs` submits it to a Ray cluster's head
through the Ray Job Submission API (how training reaches KubeRay).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import psutil
from sqlalchemy.engine import make_url

from sfmlops.adapters import mlflow_client_env
from sfmlops.settings import Settings

RunnerState = Literal["running", "succeeded", "failed", "gone", "unknown"]
"""`gone`: the runner has no such live job; `unknown`: the runner could not be asked."""


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
                env=mlflow_client_env.without_serving_client_env(os.environ),
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives a restart of the API that started it
            )
        self._children[child.pid] = child
        # The start time tells this job from a later process given the same pid (pids are reused
        # within minutes on a busy machine) when an API restarted since asks about it.
        try:
            started = psutil.Process(child.pid).create_time()
        except psutil.NoSuchProcess:  # already gone: the pid alone still names it here
            return f"pid:{child.pid}"
        return f"pid:{child.pid}@{started:.2f}"

    def state(self, runner_job_id: str) -> RunnerState:
        pid_text, _, started = runner_job_id.removeprefix("pid:").partition("@")
        pid = int(pid_text)
        child = self._children.get(pid)
        if child is not None:
            code = child.poll()  # also reaps it, so a finished child is no zombie
            if code is None:
                return "running"
            return "succeeded" if code == 0 else "failed"
        # Started by an earlier process of ours: alive unless gone, a zombie, or the pid now
        # another process's (ids without a start time, from older versions, cannot tell).
        try:
            process = psutil.Process(pid)
            status = process.status()
            reused = bool(started) and f"{process.create_time():.2f}" != started
        except psutil.NoSuchProcess:  # ZombieProcess is one too
            return "gone"
        except psutil.AccessDenied:  # it exists, under another user
            return "running"
        return "gone" if reused or status == psutil.STATUS_ZOMBIE else "running"

    def log_path(self, job_id: str) -> Path:
        """Where a job's output goes."""
        return self.logs / f"{job_id}.log"


DRIVER_CPUS = 1
"""CPUs a training job's driver reserves on the Ray cluster."""


# Ray's answer to a submission before the head's job agent is up, and how long to retry it.
NO_AGENT = "No available agent to submit job"
AGENT_WAIT_SECONDS = 60


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
        deadline = time.monotonic() + AGENT_WAIT_SECONDS
        while True:
            try:
                return str(
                    self.client.submit_job(
                        entrypoint=shlex.join(["sfmlops", *arguments]),
                        submission_id=f"sfmlops-{job_id}",
                        # The driver takes a CPU, so Ray places it on a node that has one: a
                        # worker (the chart's head offers none), where the training runs, not on
                        # the head that coordinates the cluster. Its fan-out tasks use the
                        # workers' other CPUs.
                        entrypoint_num_cpus=DRIVER_CPUS,
                        runtime_env={"env_vars": self.env_vars},
                        metadata={"sfmlops_job_id": job_id},
                    )
                )
            except RuntimeError as error:
                # A head that has just (re)started answers before its job agent has
                # registered; the submission succeeds once it has.
                if NO_AGENT not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(1)

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
