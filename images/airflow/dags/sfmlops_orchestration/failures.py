"""What a failed task leaves behind: a log line and the `sfmlops_last_failure` Variable."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

log = logging.getLogger(__name__)

LAST_FAILURE_VARIABLE = "sfmlops_last_failure"
"""JSON: dag_id, task_id, run_id, try_number, error, failed_at. Dashboards and on-call read it."""


def record_failure(context: Any) -> None:
    """`on_failure_callback` of every sfmlops task (called once the retries are spent).

    Recording must never hide the task's own error, so a failure to write the Variable is
    logged, not raised.
    """
    from airflow.sdk import Variable  # noqa: PLC0415 - only when a task has failed

    ti = context["ti"]
    error = context.get("exception")
    record = {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "try_number": ti.try_number,
        "error": f"{type(error).__name__}: {error}" if error else "unknown error",
        "failed_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    log.error(
        "sfmlops task failed after its retries: %s.%s (run %s, try %s): %s",
        record["dag_id"],
        record["task_id"],
        record["run_id"],
        record["try_number"],
        record["error"],
    )
    try:
        Variable.set(LAST_FAILURE_VARIABLE, json.dumps(record))
    except Exception:
        log.exception("could not record the failure in the %s Variable", LAST_FAILURE_VARIABLE)
