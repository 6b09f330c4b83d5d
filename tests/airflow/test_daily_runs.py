"""The daily DAG's data-quality check run for real (dag.test) on a real sfmlops database.

Here the stream task is marked successful and the check runs against data loaded with
`sfmlops load-data`, so what is tested is the check's wiring: templates, params, thresholds,
retries and the failure record. test_daily_stream.py runs the whole DAG against a real broker.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest
from dag_support import ROOT, DagRunner, sfmlops

DAILY = "sfmlops_daily_ingest"
ROSSMANN = ROOT / "src" / "sfmlops" / "datasets" / "rossmann"
STORES = {"1", "2", "3"}
DAYS = {"2015-06-12", "2015-06-13"}


@pytest.fixture
def database(tmp_path: Path, sfmlops_cli: str) -> Path:
    """An sfmlops home holding stores 1-3 for two days, store 2 missing 2015-06-13."""
    folder = tmp_path / "rossmann"
    folder.mkdir()
    for name in ("store.csv", "store_states.csv"):
        with (ROSSMANN / name).open() as source, (folder / name).open("w") as out:
            rows = csv.reader(source)
            writer = csv.writer(out)
            writer.writerow(next(rows))
            writer.writerows(row for row in rows if row[0] in STORES)
    with (
        gzip.open(ROSSMANN / "train.csv.gz", "rt") as source,
        (folder / "train.csv").open("w") as out,
    ):
        rows = csv.reader(source)
        writer = csv.writer(out)
        writer.writerow(next(rows))
        for row in rows:
            if row[2] < min(DAYS):
                break  # the file is newest first
            if row[0] in STORES and not (row[0] == "2" and row[2] == "2015-06-13"):
                writer.writerow(row)
    home = tmp_path / "sfmlops"
    sfmlops(sfmlops_cli, home, "load-data", "--path", str(folder))
    return home


def test_a_store_missing_the_day_fails_the_check_loudly(run_dag: DagRunner, database: Path) -> None:
    result = run_dag(
        DAILY, conf={"sales_date": "2015-06-13"}, mark_success="stream_once",
        SFMLOPS_HOME=str(database), SFMLOPS_TASK_RETRIES="1",
    )  # fmt: skip

    assert result["state"] == "failed"
    assert result["tasks"]["check_ingest"] == {"state": "failed", "try_number": 2}
    failure = result["last_failure"]
    assert failure["task_id"] == "check_ingest"
    assert "ingest check failed for 2015-06-13" in failure["error"]
    assert "1 of 3 stores have no record for 2015-06-13 (allowed 0): 2" in failure["error"]


def test_within_the_thresholds_the_run_succeeds(run_dag: DagRunner, database: Path) -> None:
    result = run_dag(
        DAILY, conf={"sales_date": "2015-06-13", "max_missing_stores": 1},
        mark_success="stream_once", SFMLOPS_HOME=str(database),
    )  # fmt: skip

    assert result["state"] == "success"
    assert result["tasks"]["check_ingest"] == {"state": "success", "try_number": 1}
    assert '"missing_stores": [2]' in result["log"]
    assert '"rows": 2' in result["log"]
    # Nothing was forecast for those days: nothing to score, no stale store to retrain.
    assert result["tasks"]["score_forecasts"] == {"state": "success", "try_number": 1}
    assert result["tasks"]["retrain_stale_stores"] == {"state": "success", "try_number": 1}
    assert "No stale store on the scored days up to 2015-06-13" in result["log"]
