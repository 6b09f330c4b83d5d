"""Entry points that build the API from the environment (for gunicorn and uvicorn workers)."""

from __future__ import annotations

from fastapi import FastAPI

from sfmlops.services.api.app import create_app
from sfmlops.settings import Settings


def app_from_environment() -> FastAPI:
    """The API with settings read from SFMLOPS_* variables (one Settings per worker)."""
    return create_app(Settings(), settle_heap=True)
