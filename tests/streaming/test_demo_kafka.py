"""`sfmlops demo --with-kafka` as a user runs it: it starts and stops its own broker and PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.support.cli_processes import environment
from tests.support.stream_harness import SFMLOPS

pytestmark = pytest.mark.e2e


@pytest.fixture
def home() -> Iterator[Path]:
    # The throwaway PostgreSQL runs as "postgres" under root: its folder's parents must be
    # reachable, which pytest's private tmp_path is not.
    folder = Path(tempfile.mkdtemp(prefix="sfmlops-demo-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_demo_with_kafka_streams_the_last_days_into_postgres(
    home: Path, rossmann_slice: Path, jars_dir: Path
) -> None:
    env = environment(home, jars_dir=str(jars_dir)) | {"COLUMNS": "200", "NO_COLOR": "1"}

    result = subprocess.run(
        [
            SFMLOPS,
            "demo",
            "--path",
            str(rossmann_slice),
            "--with-kafka",
            "--windows",
            "1",
            "--no-serve",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Sent 140 events (7 days)" in result.stdout
    assert "Landed in PostgreSQL via Kafka" in result.stdout
    sales = pd.read_csv(rossmann_slice / "train.csv.gz")
    for day in ("2015-06-07", "2015-06-13"):
        total = sales.loc[sales["Date"] == day, "Sales"].sum()
        row = next(line for line in result.stdout.splitlines() if line.startswith(f"│ {day} │"))
        assert [cell.strip() for cell in row.strip("│ ").split("│")] == [day, "20", f"{total:,.0f}"]
    assert "Dead letters from this run: 0" in result.stdout
    # What it started, it stopped: no broker pid, no PostgreSQL folder left.
    assert not (home / "kafka" / "broker.pid").exists()
    assert not (home / "demo-postgres").exists()
