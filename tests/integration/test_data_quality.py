"""Data-quality reports and thresholds on a real database, and `sfmlops check` as a process."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine

from sfmlops.adapters.db import dead_letter_records, sales_records, store_records
from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.adapters.db.tables import forecasts
from sfmlops.core import columns
from sfmlops.services import data_quality
from tests.support.cli_processes import environment

pytestmark = pytest.mark.integration
DAY = dt.date(2015, 6, 13)


def stores_frame(ids: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame({name: [None] * len(ids) for name in columns.STORE_COLUMNS})
    frame[columns.STORE_ID] = ids
    frame[columns.PROMO2] = 0
    return frame


def sales_frame(store_ids: list[int], day: dt.date) -> pd.DataFrame:
    return pd.DataFrame(
        {
            columns.STORE_ID: store_ids,
            columns.PRODUCT_ID: columns.DEFAULT_PRODUCT,
            columns.SALES_DATE: pd.to_datetime([day] * len(store_ids)),
            columns.SALES: 100.0,
            columns.CUSTOMERS: 10,
            columns.OPEN: 1,
            columns.PROMO: 0,
            columns.STATE_HOLIDAY: "0",
            columns.SCHOOL_HOLIDAY: 0,
        }
    )


def seed(engine: Engine) -> None:
    with engine.begin() as connection:
        store_records.upsert_stores(connection, stores_frame([1, 2, 3]))
        sales_records.upsert_sales(connection, sales_frame([1, 2, 3], DAY - dt.timedelta(days=1)))
        sales_records.upsert_sales(connection, sales_frame([1, 3], DAY))
        dead_letter_records.add_dead_letters(
            connection, [dead_letter_records.DeadLetter(source="kafka", payload="{}", reason="bad")]
        )


def add_forecasts(engine: Engine, version: str, series_days: dict[int, int]) -> None:
    rows = [
        {columns.STORE_ID: store_id, columns.PRODUCT_ID: columns.DEFAULT_PRODUCT,
         "forecast_date": DAY + dt.timedelta(days=1 + day), "model_version": version,
         "yhat": 1.0, "yhat_lower": 0.5, "yhat_upper": 1.5, "yhat_lower_95": 0.1,
         "yhat_upper_95": 2.0}
        for store_id, days in series_days.items()
        for day in range(days)
    ]  # fmt: skip
    with engine.begin() as connection:
        connection.execute(forecasts.insert(), rows)


def test_ingest_report_names_missing_stores_and_counts_dead_letters(engine: Engine) -> None:
    seed(engine)
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)

    with engine.connect() as connection:
        report = data_quality.ingest_report(connection, DAY, an_hour_ago)
        later = data_quality.ingest_report(
            connection, DAY, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
        )

    assert (report.rows, report.rows_per_store, report.missing_stores) == (2, {1: 1, 3: 1}, [2])
    assert (report.stores, report.dead_letters, later.dead_letters) == (3, 1, 0)
    strict = data_quality.ingest_breaches(report, data_quality.IngestThresholds())
    assert len(strict) == 2
    assert "1 of 3 stores have no record for 2015-06-13 (allowed 0): 2" in strict[0]
    assert "1 records dead-lettered" in strict[1]
    tolerant = data_quality.IngestThresholds(min_rows=2, max_missing_stores=1, max_dead_letters=1)
    assert data_quality.ingest_breaches(report, tolerant) == []
    assert "2 sales rows landed for 2015-06-13, expected at least 3" in " ".join(
        data_quality.ingest_breaches(report, data_quality.IngestThresholds(min_rows=3))
    )


def test_forecast_report_wants_every_series_for_the_horizon(engine: Engine) -> None:
    seed(engine)
    add_forecasts(engine, "7", {1: 7, 2: 7, 3: 6})
    add_forecasts(engine, "8", {1: 7, 2: 7, 3: 7})

    with engine.connect() as connection:
        short = data_quality.forecast_report(connection, "7", horizon_days=7)
        full = data_quality.forecast_report(connection, "8", horizon_days=7)
        missing = data_quality.forecast_report(connection, "9", horizon_days=7)

    assert (short.series, short.complete_series, short.incomplete) == (3, 2, [(3, "total", 6)])
    assert "1 of 3 series lack 7 forecast days for model version 7" in " ".join(
        data_quality.forecast_breaches(short)
    )
    assert data_quality.forecast_breaches(short, max_incomplete_series=1) == []
    assert (full.rows, data_quality.forecast_breaches(full)) == (21, [])
    assert missing.complete_series == 0
    assert data_quality.forecast_breaches(missing)


def test_check_commands_exit_non_zero_on_a_breach(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sfmlops.db'}"
    engine = make_engine(url)
    migrate(engine)
    seed(engine)
    add_forecasts(engine, "8", {1: 7, 2: 7, 3: 7})
    engine.dispose()
    env = environment(tmp_path, database_url=url) | {"NO_COLOR": "1"}
    command = [str(Path(sys.executable).with_name("sfmlops")), "check"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    failing = run("ingest", "--sales-date", "2015-06-13")
    passing = run(
        "ingest", "--sales-date", "2015-06-13", "--max-missing-stores", "1",
        "--dead-letters-since", "2999-01-01T00:00:00+00:00",
    )  # fmt: skip
    forecasts_ok = run("forecasts", "--model-version", "8")
    forecasts_missing = run("forecasts", "--model-version", "9")
    # Defaults: the as-of date (the newest sales day here); the champion (none registered).
    as_of = run("ingest", "--max-missing-stores", "1", "--max-dead-letters", "9")
    no_champion = run("forecasts")

    assert failing.returncode == 1
    assert "ingest check failed for 2015-06-13" in failing.stderr
    assert json.loads(failing.stdout)["missing_stores"] == [2]
    assert passing.returncode == 0, passing.stderr
    assert json.loads(passing.stdout)["dead_letters"] == 0
    assert forecasts_ok.returncode == 0, forecasts_ok.stderr
    assert json.loads(forecasts_ok.stdout)["complete_series"] == 3
    assert forecasts_missing.returncode == 1
    assert "no forecasts of model version 9: no such version" in forecasts_missing.stderr
    assert as_of.returncode == 0, as_of.stderr
    assert json.loads(as_of.stdout)["sales_date"] == "2015-06-13"
    assert no_champion.returncode == 1
    assert "no champion model yet: give --model-version" in no_champion.stderr
