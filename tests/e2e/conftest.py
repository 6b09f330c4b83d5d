"""End-to-end fixtures: a HOME with a loaded database for real server processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.services import loading


@pytest.fixture
def home(tmp_path: Path, rossmann_slice: Path) -> Path:
    """A HOME whose embedded SQLite database holds the data slice."""
    home = tmp_path / "home"
    engine = make_engine(f"sqlite:///{home / 'sfmlops.db'}")
    migrate(engine)
    loading.load_folder(engine, rossmann_slice)
    engine.dispose()
    return home
