"""The `sfmlops` command as a user runs it: a real process, a real database file."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from sfmlops import __version__ as sfmlops_version
from sfmlops.adapters.db import audit, plan_records
from sfmlops.adapters.db.engine import make_engine
from sfmlops.adapters.db.tables import sales
from sfmlops.cli import app
from sfmlops.cli.command_index import COMMANDS
from sfmlops.core import columns
from sfmlops.services import ingestion
from tests.support.cli_processes import sfmlops
from tests.support.network import free_port

pytestmark = pytest.mark.e2e


def sales_rows(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(sales)).scalar_one())
    finally:
        engine.dispose()


def test_demo_trains_forecasts_and_ends_serving_the_api_and_dashboard(
    tmp_path: Path, rossmann_slice: Path
) -> None:
    home = tmp_path / "home"
    api_port, ui_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFMLOPS_")}
    env |= {"SFMLOPS_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        demo = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("sfmlops")),
                "demo",
                "--path",
                str(rossmann_slice),
                "--windows",
                "1",
                "--api-port",
                str(api_port),
                "--ui-port",
                str(ui_port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 600
            while "Press Ctrl-C to stop." not in log.read_text():
                assert demo.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(1)
            output = " ".join(log.read_text().split())
            forecast = httpx.get(f"http://127.0.0.1:{api_port}/v1/stores/1/forecast", timeout=30)
            dashboard = httpx.get(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=30)
        finally:
            demo.send_signal(signal.SIGTERM)
            code = demo.wait(timeout=120)

    rows = len(pd.read_csv(rossmann_slice / "train.csv.gz"))
    assert f"{rows:,}" in output
    assert "registered sfmlops-forecaster version 1 as champion" in output
    assert (
        "Wrote 140 forecasts (20 series, 2015-06-14 to 2015-06-20) with sfmlops-forecaster version 1"
        in output
    )
    assert f"http://127.0.0.1:{api_port}/docs" in output
    assert f"dashboard http://127.0.0.1:{ui_port}" in output
    assert sales_rows(f"sqlite:///{home / 'sfmlops.db'}") == rows
    assert forecast.status_code == 200
    assert forecast.json()["model_version"] == "1"
    assert len(forecast.json()["forecast"]) == 7
    assert dashboard.status_code == 200
    # SIGTERM (or Ctrl-C) stops the demo and both services.
    assert code == 0, log.read_text()[-3000:]
    for port in (api_port, ui_port):
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_stores_and_config_commands(tmp_path: Path, rossmann_slice: Path) -> None:
    home = tmp_path / "home"
    assert sfmlops(home, "load-data", "--path", str(rossmann_slice)).returncode == 0

    stores = sfmlops(home, "stores", "--limit", "3")
    config = sfmlops(home, "config", "--json")

    assert stores.returncode == 0
    assert "20 stores" in stores.stdout
    assert config.returncode == 0
    assert str(home) in config.stdout


def test_dead_letters_are_listed_and_loads_are_audited(
    tmp_path: Path, rossmann_slice: Path
) -> None:
    home = tmp_path / "home"
    assert sfmlops(home, "load-data", "--path", str(rossmann_slice)).returncode == 0
    engine = make_engine(f"sqlite:///{home / 'sfmlops.db'}")
    good = {"store_id": 1, "sales_date": "2015-06-14", "sales": 10, "open": 1, "promo": 0,
            "state_holiday": "0", "school_holiday": 0}  # fmt: skip
    ingestion.ingest_records(engine, [good, good | {"store_id": 2, "open": 0}], source="api")
    with engine.connect() as connection:
        events = audit.list_events(connection)
    engine.dispose()

    table = sfmlops(home, "dead-letters")
    as_json = sfmlops(home, "dead-letters", "--json", "--source", "api")
    none = sfmlops(home, "dead-letters", "--source", "kafka")

    assert table.returncode == 0, table.stderr
    assert "sales on a closed day" in table.stdout
    letters = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [json.loads(letter["payload"])["store_id"] for letter in letters] == [2]
    assert letters[0]["reason"].startswith("sales: sales on a closed day (open is 0)")
    assert "No dead letters from kafka." in none.stdout
    assert [(e["action"], e["actor"].startswith("cli:")) for e in events] == [("data.load", True)]
    assert events[0]["detail"]["sales_rows"] == len(pd.read_csv(rossmann_slice / "train.csv.gz"))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_bad_file_exits_non_zero_and_names_the_place(
    tmp_path: Path, rossmann_slice: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'db.sqlite'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    home = tmp_path / "home"
    assert (
        sfmlops(home, "load-data", "--path", str(rossmann_slice), database_url=url).returncode == 0
    )
    before = sales_rows(url)
    bad = tmp_path / "bad"
    shutil.copytree(rossmann_slice, bad)
    frame = pd.read_csv(bad / "train.csv.gz", dtype=str, keep_default_na=False)
    frame.loc[10, "Sales"] = "-1"
    frame.loc[11, "Date"] = "yesterday"
    frame.loc[12, "Sales"] = "1"  # a valid change that must not land either
    with gzip.open(bad / "train.csv.gz", "wt") as out:
        frame.to_csv(out, index=False)

    result = sfmlops(home, "load-data", "--path", str(bad), database_url=url)

    assert result.returncode == 1
    assert "line 12, column Sales: must be >= 0" in result.stderr
    assert "line 13, column Date: not a date" in result.stderr
    assert "nothing was written" in result.stderr
    assert "Traceback" not in result.stderr
    assert sales_rows(url) == before


def test_help_is_there_for_every_command(tmp_path: Path) -> None:
    # One real process for the entry point; every command's help in-process (a process per
    # command would cost the CLI's start-up each time).
    result = sfmlops(tmp_path, "--help")
    assert result.returncode == 0
    runner = CliRunner()
    names = list(COMMANDS)
    assert {"train", "pipeline", "serve", "ui", "mlflow", "demo", "check"} <= set(names)
    for name in names:
        assert name in result.stdout
        helped = runner.invoke(app, [name, "--help"], env={"SFMLOPS_HOME": str(tmp_path)})
        assert helped.exit_code == 0, (name, helped.output)
        assert "Usage" in helped.output


def test_version_and_piped_help_are_whole(tmp_path: Path) -> None:
    # Piped, with no COLUMNS: rich would cut help and tables at 80 columns.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFMLOPS_")}
    env.pop("COLUMNS", None)
    env |= {"SFMLOPS_HOME": str(tmp_path), "NO_COLOR": "1"}
    command = str(Path(sys.executable).with_name("sfmlops"))
    version = subprocess.run(
        [command, "--version"], env=env, capture_output=True, text=True, check=False
    )
    helped = subprocess.run(
        [command, "mlflow", "--help"], env=env, capture_output=True, text=True, check=False
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    assert version.returncode == 0
    assert version.stdout.strip() == f"sfmlops {sfmlops_version} (commit {commit})"
    assert helped.returncode == 0
    assert "--artifacts-destination " in helped.stdout


def test_load_plan_stores_the_file_or_names_the_bad_row_and_changes_nothing(
    tmp_path: Path, rossmann_slice: Path
) -> None:
    home = tmp_path / "home"
    assert sfmlops(home, "load-data", "--path", str(rossmann_slice)).returncode == 0
    header = "Id,Store,DayOfWeek,Date,Open,Promo,StateHoliday,SchoolHoliday\n"
    good = tmp_path / "plan.csv"
    good.write_text(header + "1,1,1,2015-08-03,1,1,0,1\n2,2,1,2015-08-03,,0,0,0\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(header + "1,1,1,2015-08-03,1,0,0,0\n2,3,2,2015-08-04,1,yes,0,0\n")

    loaded = sfmlops(home, "load-plan", str(good))
    refused = sfmlops(home, "load-plan", str(bad))

    assert loaded.returncode == 0, loaded.stderr
    assert "2 store-days of 2 store(s)" in loaded.stdout
    assert refused.returncode == 1
    assert "bad.csv, line 3, column Promo" in refused.stderr
    engine = make_engine(f"sqlite:///{home / 'sfmlops.db'}")
    with engine.connect() as connection:
        plan = plan_records.read_plan(connection, with_changes=True)
        events = audit.list_events(connection)
    engine.dispose()
    assert plan[columns.PROMO].tolist() == [1, 0]  # store 1's promotion kept: nothing changed
    assert plan[columns.OPEN].tolist() == [1, 1]  # a blank Open means open
    assert plan[plan_records.UPDATED_BY].str.startswith("cli:").all()
    assert any(event["action"] == "plan.load" for event in events)
