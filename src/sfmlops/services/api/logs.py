"""Structured JSON logs for the API process (one object per line)."""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# One JSON object per line: time (UTC, ISO 8601), level, logger, message, any `extra` fields
# and, for errors, the formatted exception.
_FORMATTER = {
    "()": JsonFormatter,
    "fmt": "{levelname}{name}{message}",
    "style": "{",
    "timestamp": "time",
    "rename_fields": {"levelname": "level", "name": "logger", "exc_info": "exception"},
}


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A dictConfig that sends sfmlops', uvicorn's and gunicorn's logs to stderr as JSON."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": _FORMATTER},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            name: {"handlers": ["stderr"], "level": level, "propagate": False}
            for name in (
                "uvicorn",
                "uvicorn.error",
                "uvicorn.access",
                "gunicorn.error",
                "gunicorn.access",
            )
        },
    }


def configure_logging(level: str = "INFO") -> None:
    """Apply `logging_config` (called by `sfmlops serve`, never on import)."""
    logging.config.dictConfig(logging_config(level))
