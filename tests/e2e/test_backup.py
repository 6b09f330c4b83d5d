"""Restore drill: back up, destroy, restore; the data and the stream's offsets come back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from sfmlops.adapters.db import stream_offset_records
from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.adapters.db.tables import sales
from sfmlops.services import loading

pytestmark = pytest.mark.e2e


def _sfmlops(home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFMLOPS_")}
    env |= {"SFMLOPS_HOME": str(home), "SFMLOPS_DATABASE_URL": url, "NO_COLOR": "1"}
    command = [str(Path(sys.executable).with_name("sfmlops")), *args]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_restore_brings_back_the_sales_and_the_stream_offsets(
    tmp_path: Path, rossmann_slice: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'sales.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    migrate(engine)
    loading.load_folder(engine, rossmann_slice)
    with engine.begin() as connection:
        stream_offset_records.write_stream_offsets(connection, "sales.daily", {0: 1234, 1: 99})
        rows = connection.execute(select(func.count()).select_from(sales)).scalar_one()
    backup_file = tmp_path / "backups" / "sfmlops.dump"

    backed_up = _sfmlops(tmp_path / "home", url, "backup", str(backup_file))
    with engine.begin() as connection:  # the disaster: every sale and offset gone
        connection.execute(text("DELETE FROM sales"))
        connection.execute(text("DELETE FROM stream_offsets"))
    refused = _sfmlops(tmp_path / "home", url, "restore", str(backup_file))
    restored = _sfmlops(tmp_path / "home", url, "restore", str(backup_file), "--yes")

    assert backed_up.returncode == 0, backed_up.stderr
    assert backup_file.stat().st_size > 0
    assert refused.returncode == 1
    assert "pass --yes" in refused.stderr
    assert restored.returncode == 0, restored.stderr
    engine.dispose()
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(sales)).scalar_one() == rows
        # The stream job resumes from the restored offsets: nothing lost, nothing applied twice.
        assert stream_offset_records.read_stream_offsets(connection, "sales.daily") == {
            0: 1234,
            1: 99,
        }
    engine.dispose()
