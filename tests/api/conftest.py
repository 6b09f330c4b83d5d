"""An API over a real database holding a slice of the data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from sfmlops.services import loading
from sfmlops.services.api import create_app
from sfmlops.settings import Settings

TOKEN = "test-token-not-a-secret"


@pytest.fixture
def loaded_engine(engine: Engine, rossmann_slice: Path) -> Engine:
    loading.load_folder(engine, rossmann_slice)
    return engine


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        home=tmp_path / "home",
        api_token=SecretStr(TOKEN),
        api_max_body_bytes=200_000,
    )


@pytest.fixture
def client(settings: Settings, loaded_engine: Engine) -> Iterator[TestClient]:
    with TestClient(
        create_app(settings, engine=loaded_engine), raise_server_exceptions=False
    ) as client:
        yield client


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}
