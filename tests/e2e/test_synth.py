"""`sfmlops synth` writes a multi-product dataset that `sfmlops load-data` loads as it is."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from sfmlops.adapters.db.engine import make_engine
from sfmlops.adapters.db.tables import sales
from tests.support.cli_processes import sfmlops

pytestmark = pytest.mark.e2e


def test_synth_is_deterministic_and_load_data_stores_every_series(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    arguments = ("synth", "--stores", "3", "--products", "4", "--days", "40", "--seed", "5")
    for out in (first, second):
        result = sfmlops(tmp_path / "home", *arguments, "--out", str(out))
        assert result.returncode == 0, result.stdout + result.stderr
    assert "12 series" in result.stdout
    assert (first / "train.csv.gz").read_bytes() == (second / "train.csv.gz").read_bytes()
    written = pd.read_csv(first / "train.csv.gz")
    assert list(written.columns[:2]) == ["Store", "Product"]
    assert sorted(written["Store"].unique()) == [1, 2, 3]
    assert len(pd.read_csv(first / "store.csv")) == 3

    loaded = sfmlops(tmp_path / "home", "load-data", "--path", str(first))
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'home' / 'sfmlops.db'}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(func.count()).select_from(sales)).scalar_one()
            series = connection.execute(
                select(func.count()).select_from(
                    select(sales.c.store_id, sales.c.product_id).distinct().subquery()
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert (rows, series) == (len(written), 12)


def test_synth_refuses_more_stores_than_the_source_has_and_writes_nothing(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    result = sfmlops(
        tmp_path / "home", "synth", "--stores", "5000", "--products", "2", "--out", str(out)
    )
    assert result.returncode != 0
    assert "--stores 5000" in result.stdout + result.stderr
    assert not out.exists()
