"""Training jobs: records in `training_jobs`, submitted to a job runner, reported by the job.

A job is `sfmlops train --job-id ID [--stores ...] [--models ...]` run somewhere else than the caller, by a
runner of `adapters.job_runners`. The job reports its own status and progress into the
database; the runner is asked only when a job went quiet, to tell a crash from a run.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from sfmlops.adapters.db import training_job_records
from sfmlops.adapters.db.engine import TRAINING_JOBS_LOCK_KEY, database_lock
from sfmlops.adapters.db.training_job_records import TrainingJob
from sfmlops.adapters.job_runners import JobRunner
from sfmlops.core.job_status import JobStatus

ACTIVE_JOBS_SCANNED = 200  # the newest jobs checked for overlap; older ones are long finished


@dataclass(frozen=True)
class SubmittedJob:
    id: str
    runner: str
    runner_job_id: str | None


class JobConflictError(RuntimeError):
    """A queued or running job already trains some of the requested stores."""


def submit_training_job(
    engine: Engine,
    runner: JobRunner,
    stores: Sequence[int] | None,
    reason: str | None = None,
    models: Sequence[str] | None = None,
) -> SubmittedJob:
    """Record a queued job and hand it to the runner; a runner failure fails the job, loudly.

    `reason` (why the job was started) is kept on the job and tags its MLflow run. `models`
    (checked names, `models.model_set`) is the job's model set; None: `sfmlops train`'s own.

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
                for job in training_job_records.list_training_jobs(connection, ACTIVE_JOBS_SCANNED)
                if job.status.active and _overlap(job.stores, stores)
            ]
        # A job whose process died without a word is not active any more.
        active = [
            job for job in (refresh_job(engine, runner, job) for job in active) if job.status.active
        ]
        if active:
            job = active[0]
            trains = "all stores" if job.stores is None else f"stores {job.stores[:20]}"
            raise JobConflictError(
                f"training job {job.id} ({job.status}) already trains {trains}; "
                "wait for it to finish"
            )
        with engine.begin() as connection:
            training_job_records.create_training_job(
                connection, job_id, runner.name, stores, reason
            )
    arguments = ["train", "--job-id", job_id]
    if stores:
        arguments += ["--stores", ",".join(str(store) for store in stores)]
    if reason:
        arguments += ["--reason", reason]
    if models:
        arguments += ["--models", ",".join(models)]
    try:
        runner_job_id = runner.submit(job_id, arguments)
    except Exception as error:
        with engine.begin() as connection:
            training_job_records.update_training_job(
                connection,
                job_id,
                status=JobStatus.FAILED,
                error=f"could not start the job: {error}",
                finished_at=_now(),
            )
        raise RuntimeError(f"could not start training job {job_id}: {error}") from error
    with engine.begin() as connection:
        training_job_records.update_training_job(connection, job_id, runner_job_id=runner_job_id)
    return SubmittedJob(id=job_id, runner=runner.name, runner_job_id=runner_job_id)


def _overlap(running: Sequence[int] | None, requested: Sequence[int] | None) -> bool:
    if running is None or requested is None:
        return True
    return not set(running).isdisjoint(requested)


def refresh_job(engine: Engine, runner: JobRunner, job: TrainingJob) -> TrainingJob:
    """Mark an active job failed when its runner says it ended without reporting."""
    if not job.status.active or not job.runner_job_id or job.runner != runner.name:
        return job
    state = runner.state(job.runner_job_id)
    if state in ("running", "unknown"):
        return job
    with engine.begin() as connection:
        current = training_job_records.get_training_job(connection, job.id) or job
        if not current.status.active:
            return current  # it reported in the meantime
        training_job_records.update_training_job(
            connection,
            job.id,
            status=JobStatus.FAILED,
            error=f"the job process ended without reporting a result (runner says {state})",
            finished_at=_now(),
        )
        return training_job_records.get_training_job(connection, job.id) or current


class JobReporter:
    """What a running job writes about itself: start, progress, outcome."""

    def __init__(self, engine: Engine, job_id: str) -> None:
        self.engine = engine
        self.job_id = job_id
        with engine.connect() as connection:
            if training_job_records.get_training_job(connection, job_id) is None:
                raise ValueError(f"unknown training job {job_id}")

    def started(self, total: int) -> None:
        self._update(
            status=JobStatus.RUNNING, started_at=_now(), progress_total=total, progress_done=0
        )

    def progress(self, done: int, total: int | None = None) -> None:
        fields: dict[str, Any] = {"progress_done": done}
        if total is not None:
            fields["progress_total"] = total
        self._update(**fields)

    def tracked(self, mlflow_run_id: str) -> None:
        self._update(mlflow_run_id=mlflow_run_id)

    def succeeded(self, model_version: str | None, warnings: str | None = None) -> None:
        self._update(
            status=JobStatus.SUCCEEDED,
            model_version=model_version,
            finished_at=_now(),
            error=warnings,
        )

    def failed(self, error: str) -> None:
        self._update(status=JobStatus.FAILED, error=error, finished_at=_now())

    def _update(self, **fields: Any) -> None:
        with self.engine.begin() as connection:
            training_job_records.update_training_job(connection, self.job_id, **fields)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
