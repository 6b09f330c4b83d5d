"""Gunicorn configuration for `sfmlops serve --workers N` and the API image.

Used as `gunicorn --config python:sfmlops.services.api.gunicorn_conf
'sfmlops.services.api.server:app_from_environment()'`; bind and workers come from the
command line.
"""

from __future__ import annotations

import os
from typing import Any

from sfmlops.services.api.logs import logging_config

worker_class = "uvicorn_worker.UvicornWorker"
logconfig_dict = logging_config(os.environ.get("SFMLOPS_LOG_LEVEL", "INFO").upper())
graceful_timeout = 20
timeout = 120
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def child_exit(_server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the shared metric files."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess  # noqa: PLC0415 - after the env is set

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
