"""Training job records: the `training_jobs` table, one `TrainingJob` per row."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Connection, func, select

from sfmlops.adapters.db.tables import training_jobs
from sfmlops.core.job_status import JobStatus


@dataclass(frozen=True)
class TrainingJob:
    """One training job as recorded.

    Attributes:
        runner: The job runner that started it (`local`, `ray-jobs`).
        runner_job_id: The runner's own id of the job, once submitted.
        stores: The stores trained; None means every store.
        error: Why the job failed, or the warnings of a job that succeeded.
        reason: Why it was started, when the starter said.
    """

    id: str
    status: JobStatus
    runner: str
    runner_job_id: str | None
    stores: list[int] | None
    progress_done: int
    progress_total: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    mlflow_run_id: str | None
    model_version: str | None
    error: str | None
    reason: str | None = None


def count_training_jobs_by_status(connection: Connection) -> dict[JobStatus, int]:
    """How many training jobs are in each status (every status, zero included)."""
    result = connection.execute(
        select(training_jobs.c.status, func.count()).group_by(training_jobs.c.status)
    )
    counts = dict.fromkeys(JobStatus, 0)
    for status, count in result:
        counts[JobStatus(status)] = int(count)
    return counts


TRAINING_SCOPES = ("full", "single-store")


def last_finished_training_jobs(connection: Connection) -> dict[tuple[str, str], dt.datetime]:
    """When the latest finished training job of each (status, scope) finished.

    Scope "full" is a job over every store (`stores` NULL), "single-store" a retrain of some.
    """
    full = training_jobs.c.stores.is_(None)
    query = (
        select(training_jobs.c.status, full, func.max(training_jobs.c.finished_at))
        .where(training_jobs.c.finished_at.is_not(None))
        .group_by(training_jobs.c.status, full)
    )
    result = {}
    for status, is_full, finished in connection.execute(query):
        stamp = pd.Timestamp(finished)
        stamp = stamp if stamp.tzinfo else stamp.tz_localize("UTC")
        result[(str(status), TRAINING_SCOPES[0 if is_full else 1])] = stamp.to_pydatetime()
    return result


def create_training_job(
    connection: Connection,
    job_id: str,
    runner: str,
    stores: Sequence[int] | None,
    reason: str | None = None,
) -> None:
    """Record a queued training job (`stores` None means every store) and why it started."""
    connection.execute(
        training_jobs.insert().values(
            id=job_id,
            status=JobStatus.QUEUED.value,
            runner=runner,
            # Set here, not by the server: SQLite's CURRENT_TIMESTAMP has whole seconds only.
            created_at=dt.datetime.now(dt.UTC),
            stores=None if stores is None else json.dumps(sorted(int(s) for s in stores)),
            reason=reason,
        )
    )


def update_training_job(connection: Connection, job_id: str, **fields: Any) -> None:
    """Change fields of a training job (status, progress_done, mlflow_run_id, ...).

    Raises:
        ValueError: A field that is no column of `training_jobs`, or an unknown status.
    """
    unknown = set(fields) - set(training_jobs.c.keys())
    if unknown:
        raise ValueError(f"training_jobs has no column(s) {sorted(unknown)}")
    if "status" in fields:
        fields["status"] = JobStatus(fields["status"]).value
    connection.execute(training_jobs.update().where(training_jobs.c.id == job_id).values(**fields))


def get_training_job(connection: Connection, job_id: str) -> TrainingJob | None:
    """One training job, or None."""
    row = (
        connection.execute(select(training_jobs).where(training_jobs.c.id == job_id))
        .mappings()
        .one_or_none()
    )
    return _job(row) if row is not None else None


def list_training_jobs(connection: Connection, limit: int = 20) -> list[TrainingJob]:
    """The most recent training jobs, newest first."""
    query = (
        select(training_jobs)
        .order_by(training_jobs.c.created_at.desc(), training_jobs.c.id)
        .limit(limit)
    )
    return [_job(row) for row in connection.execute(query).mappings()]


def _job(row: Any) -> TrainingJob:
    fields = dict(row)
    fields["status"] = JobStatus(fields["status"])
    fields["stores"] = None if fields["stores"] is None else json.loads(fields["stores"])
    for name in ("created_at", "started_at", "finished_at"):
        # SQLite returns the stored UTC moments without their zone; PostgreSQL with it.
        moment = fields[name]
        if moment is not None and moment.tzinfo is None:
            fields[name] = moment.replace(tzinfo=dt.UTC)
    return TrainingJob(**fields)
