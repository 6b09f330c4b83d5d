"""What every sfmlops DAG and task shares: retries with exponential backoff, failure records,
no catch-up, one run at a time."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sfmlops_orchestration.dag_config import DagConfig
from sfmlops_orchestration.failures import record_failure

START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TAG = "sfmlops"


def dag_arguments(config: DagConfig, *tags: str) -> dict[str, Any]:
    """Keyword arguments of every sfmlops `@dag`: no catch-up, one run at a time, tags."""
    return {
        "start_date": START_DATE,
        "catchup": False,  # a missed day or week is not replayed: the next run covers it
        "max_active_runs": 1,
        "tags": [TAG, *tags],
        "default_args": default_args(config),
    }


def default_args(config: DagConfig) -> dict[str, Any]:
    """Task defaults: `config.retries` retries, delay doubling up to a cap, failures recorded."""
    return {
        "owner": "sfmlops",
        "retries": config.retries,
        "retry_delay": config.retry_delay,
        "retry_exponential_backoff": 2.0,  # each retry waits twice as long as the last
        "max_retry_delay": config.max_retry_delay,
        "on_failure_callback": record_failure,
    }
