"""The embedded MLflow store on a fresh HOME, first used by several processes at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli_processes import environment

pytestmark = pytest.mark.integration
PROCESSES = 4
FIRST_USE = """
from sfmlops.adapters import mlflow_registry as registry
from sfmlops.settings import Settings

settings = Settings()
client = registry.connect(settings)
print(registry.experiment_id(client, settings), registry.version_with_alias(client, "champion"))
"""


def test_concurrent_first_use_of_a_fresh_home_creates_the_store_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = environment(home)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_USE],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]

    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert "already exists" not in output
    experiments = {output.strip().splitlines()[-1] for output in outputs}
    assert len(experiments) == 1, experiments  # one experiment, no champion yet
    assert experiments.pop().endswith(" None")
