"""Safe promotion: two store retrains racing each other both end up in the champion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sfmlops.adapters import mlflow_registry as registry
from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.core.forecasting.bundle import ForecastBundle
from sfmlops.services import loading
from sfmlops.services.model_training import champion_bundle, version_folder
from sfmlops.settings import Settings
from tests.support.cli_processes import environment
from tests.support.model_registry import train_champion

pytestmark = pytest.mark.integration


def _retrain(home: Path, store: int, log: Path) -> subprocess.Popen[bytes]:
    env = environment(home)
    command = [str(Path(sys.executable).with_name("sfmlops")), "train", "--stores", str(store),
               "--executor", "sequential"]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _retrained_stores(bundle: ForecastBundle) -> set[int]:
    return {int(store) for store, _ in bundle.metadata.get("retrained_series", [])}


def test_two_racing_store_retrains_both_reach_the_champion(
    tmp_path: Path, rossmann_slice: Path
) -> None:
    home = tmp_path / "home"
    settings = Settings(_env_file=None, home=home)
    engine = make_engine(settings.effective_database_url)
    migrate(engine)
    loading.load_folder(engine, rossmann_slice)
    assert train_champion(settings, engine, range(1, 6)) == "1"
    engine.dispose()

    # Both start from champion 1; whichever registers second finds the champion moved.
    jobs = [_retrain(home, store, tmp_path / f"retrain-{store}.log") for store in (1, 2)]
    for store, job in zip((1, 2), jobs, strict=True):
        assert job.wait(timeout=600) == 0, (tmp_path / f"retrain-{store}.log").read_text()

    version, champion = champion_bundle(settings)
    client = registry.connect(settings)
    parent_version = champion.metadata["parent_version"]
    parent = ForecastBundle.load(
        version_folder(settings, client, parent_version), signing_key=settings.signing_key
    )
    assert version == "3"
    assert parent_version == "2"
    assert parent.metadata["parent_version"] == "1"
    # Each refit is in the chain the champion descends from: neither was dropped.
    assert _retrained_stores(champion) | _retrained_stores(parent) == {1, 2}
    assert _retrained_stores(champion) != _retrained_stores(parent)
    logs = " ".join((tmp_path / f"retrain-{store}.log").read_text() for store in (1, 2))
    assert "champion" in logs
