"""The statuses of a training job, from queued to an outcome."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a training job is: `queued` and `running` are active, the others final."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        """Whether the job may still change (queued or running)."""
        return self in (JobStatus.QUEUED, JobStatus.RUNNING)
