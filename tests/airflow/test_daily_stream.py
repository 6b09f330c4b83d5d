"""The daily DAG end to end against a real broker: a day's events produced, then `stream_once`
(Kafka -> Spark -> the sales table), the ingest check, scoring against the forecasts issued for
the day, and the stale-store trigger, each task a real `sfmlops` command."""

from __future__ import annotations

import csv
import gzip
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dag_support import ROOT, DagRunner, free_port, sfmlops, sfmlops_environment

DAILY = "sfmlops_daily_ingest"
ROSSMANN = ROOT / "src" / "sfmlops" / "datasets" / "rossmann"
STORES = {"1", "2", "3"}
FIRST_DAY, DAY = "2014-03-01", "2015-06-13"  # over a year of history, then the day streamed


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A single-node Kafka broker (scripts/kafka.sh) on free loopback ports."""
    env = os.environ | {"SFMLOPS_HOME": str(tmp_path / "kafka")}
    script = str(ROOT / "scripts" / "kafka.sh")
    port = free_port()
    subprocess.run(
        [script, "start", str(port), str(free_port())],
        env=env, check=True, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=180, check=False)


@pytest.fixture
def trained_home(tmp_path: Path, sfmlops_cli: str) -> tuple[Path, Path]:
    """A home with stores 1-3 up to the day before DAY and a champion, which issued the
    forecasts of the next days; and a CSV of DAY's sales, still to be produced."""
    folder = tmp_path / "rossmann"
    folder.mkdir()
    for name in ("store.csv", "store_states.csv"):
        with (ROSSMANN / name).open() as source, (folder / name).open("w") as out:
            rows = csv.reader(source)
            writer = csv.writer(out)
            writer.writerow(next(rows))
            writer.writerows(row for row in rows if row[0] in STORES)
    day_file = tmp_path / "day.csv"
    with (
        gzip.open(ROSSMANN / "train.csv.gz", "rt") as source,
        (folder / "train.csv").open("w") as history,
        day_file.open("w") as day,
    ):
        rows = csv.reader(source)
        header = next(rows)
        history_writer, day_writer = csv.writer(history), csv.writer(day)
        history_writer.writerow(header)
        day_writer.writerow(header)
        for row in rows:
            if row[2] < FIRST_DAY:
                break  # the file is newest first
            if row[0] in STORES and row[2] <= DAY:
                (day_writer if row[2] == DAY else history_writer).writerow(row)
    home = tmp_path / "sfmlops"
    sfmlops(sfmlops_cli, home, "load-data", "--path", str(folder))
    sfmlops(sfmlops_cli, home, "train", "--models", "seasonal_naive", "--windows", "1")
    return home, day_file


def test_a_streamed_day_is_checked_scored_and_judged(
    run_dag: DagRunner, sfmlops_cli: str, broker: str, trained_home: tuple[Path, Path]
) -> None:
    home, day_file = trained_home
    subprocess.run(
        [*sfmlops_cli.split(), "produce", "--file", str(day_file)],
        env=sfmlops_environment(home) | {"SFMLOPS_KAFKA_BOOTSTRAP_SERVERS": broker},
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    result = run_dag(
        DAILY, conf={"sales_date": DAY},
        SFMLOPS_HOME=str(home), SFMLOPS_KAFKA_BOOTSTRAP_SERVERS=broker,
    )  # fmt: skip

    assert result["state"] == "success", result["log"][-3000:]
    for task in ("stream_once", "check_ingest", "score_forecasts", "retrain_stale_stores"):
        assert result["tasks"][task] == {"state": "success", "try_number": 1}, task
    log = " ".join(result["log"].split())
    assert "Done: 3 records, 3 upserted, 0 dead-lettered." in log
    assert '"rows": 3' in log
    assert '"missing_stores": []' in log
    # The champion issued one forecast per store for the day when it was trained: all scored.
    assert "Scored 3 forecasts" in log
    assert f"No stale store on the scored days up to {DAY}" in log
