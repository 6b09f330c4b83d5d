"""An API over a real database holding a slice of the data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.core.forecasting.bundle import ForecastBundle
from sfmlops.services import loading
from sfmlops.services.api import create_app
from sfmlops.services.model_training import champion_bundle
from sfmlops.settings import Settings
from tests.support.api_tokens import AUTH, READ_TOKEN, TOKEN
from tests.support.model_registry import train_champion


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
        api_read_token=SecretStr(READ_TOKEN),
        api_max_body_bytes=200_000,
    )


@pytest.fixture
def client(settings: Settings, loaded_engine: Engine) -> Iterator[TestClient]:
    with TestClient(
        create_app(settings, engine=loaded_engine), raise_server_exceptions=False, headers=AUTH
    ) as client:
        yield client


@pytest.fixture
def auth() -> dict[str, str]:
    return AUTH


@pytest.fixture(scope="session")
def registry_home(tmp_path_factory: pytest.TempPathFactory, rossmann_slice: Path) -> Path:
    """A HOME whose embedded MLflow registry has champion version 1 (stores 1-5)."""
    home = tmp_path_factory.mktemp("registry") / "home"
    engine = make_engine(f"sqlite:///{home / 'sfmlops.db'}")
    migrate(engine)
    loading.load_folder(engine, rossmann_slice)
    train_champion(Settings(_env_file=None, home=home), engine, range(1, 6))
    engine.dispose()
    return home


@pytest.fixture(scope="session")
def bundle(registry_home: Path) -> ForecastBundle:
    """The champion's bundle, straight from the registry."""
    return champion_bundle(Settings(_env_file=None, home=registry_home))[1]


@pytest.fixture
def sqlite_engine(tmp_path: Path, rossmann_slice: Path) -> Iterator[Engine]:
    """The slice in a SQLite database (forecast tests read the as-of date from it)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'sales.db'}")
    migrate(engine)
    loading.load_folder(engine, rossmann_slice)
    yield engine
    engine.dispose()


@pytest.fixture
def served_settings(registry_home: Path) -> Settings:
    return Settings(
        _env_file=None, home=registry_home, api_token=SecretStr(TOKEN), model_poll_seconds=3600
    )


@pytest.fixture
def served(served_settings: Settings, sqlite_engine: Engine) -> Iterator[TestClient]:
    """An API serving champion version 1 (stores 1-5) over the slice."""
    with TestClient(
        create_app(served_settings, engine=sqlite_engine),
        raise_server_exceptions=False,
        headers=AUTH,
    ) as client:
        yield client
