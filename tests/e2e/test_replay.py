"""`sfmlops replay`: three weeks of the bundled data through the closed loop, with and without
a drifting store, as a user runs it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from sfmlops.adapters import mlflow_registry as registry
from sfmlops.adapters.db import sales_records
from sfmlops.adapters.db.engine import make_engine
from sfmlops.core import columns
from sfmlops.core.forecasting.bundle import ForecastBundle, future_days
from sfmlops.services import model_training, realized_accuracy
from sfmlops.settings import Settings
from tests.support import alert_replay
from tests.support.cli_processes import sfmlops

pytestmark = pytest.mark.e2e

START = dt.date(2015, 5, 1)
DAYS = 21
STORES = "1-20"
DRIFTED = 3
DRIFT_FROM = START + dt.timedelta(days=7)  # day 8
REPLAY = ("replay", "--start", START.isoformat(), "--days", str(DAYS), "--stores", STORES)
DAY_LIST = [pd.Timestamp(START + dt.timedelta(days=offset)) for offset in range(DAYS)]


def replayed(home: Path, *extra: str) -> tuple[str, Path]:
    # About 3 minutes on 2 idle cores; under a full suite's load much longer.
    result = sfmlops(home, *REPLAY, *extra, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (folder,) = (home / "reports").glob("replay-*")
    return " ".join(result.stdout.split()), folder


@pytest.fixture(scope="module")
def undrifted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    home = tmp_path_factory.mktemp("undrifted")
    stdout, folder = replayed(home)
    return home, stdout, folder


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    home = tmp_path_factory.mktemp("drifted")
    stdout, folder = replayed(home, "--drift", f"{DRIFTED}:1.6:{DRIFT_FROM}")
    return home, stdout, folder


def test_a_drifting_store_fires_its_alert_and_is_retrained(
    drifted: tuple[Path, str, Path], tmp_path: Path
) -> None:
    home, stdout, folder = drifted
    assert f"Replay {START} to {START + dt.timedelta(days=DAYS - 1)}" in stdout

    # The per-evening gauges /metrics exported make the rule fire for the drifted store by
    # day 11 and for no other store on any day; promtool agrees with that reading for every
    # store on every day.
    gauges = pd.read_csv(folder / "store_gauges.csv")
    firing = alert_replay.degraded_by_day(gauges, DAY_LIST)
    assert set().union(*firing.values()) == {DRIFTED}, firing
    detected = min(index for index, stores in firing.items() if DRIFTED in stores)
    assert 7 <= detected <= 10, firing
    alert_replay.assert_rule_agrees(gauges, DAY_LIST, tmp_path)

    # The trigger retrained the drifted store, and only it, by day 11, saying why.
    retrains = pd.read_csv(folder / "retrains.csv", dtype={"store_ids": str})
    assert set(retrains["store_ids"]) == {str(DRIFTED)}, retrains
    assert pd.to_datetime(retrains["day"]).min() <= DAY_LIST[10]
    assert retrains["reason"].str.startswith("stale on 2 evenings up to").all()
    assert "Retrain on" in stdout

    # The retrained champion serves the store at its new level: its realized RMSPE over its
    # last 5 scored days (each against the forecast issued closest to it) is below half its
    # worst day's.
    engine = make_engine(f"sqlite:///{home / 'sfmlops.db'}")
    with engine.connect() as connection:
        daily = realized_accuracy.store_daily_errors(connection, START, DAY_LIST[-1].date())
    engine.dispose()
    errors = daily[daily[columns.STORE_ID] == DRIFTED].dropna(
        subset=[realized_accuracy.REALIZED_RMSPE]
    )[realized_accuracy.REALIZED_RMSPE]
    last_5 = float((errors.tail(5) ** 2).mean() ** 0.5)
    assert last_5 < errors.max() / 2, errors.tolist()

    # Every store no retrain touched kept its model: the first and the last version forecast
    # the same days of those stores identically, to the bit.
    touched = {int(store) for ids in retrains["store_ids"] for store in ids.split()}
    kept = [(store, columns.DEFAULT_PRODUCT) for store in range(1, 21) if store not in touched]
    settings = Settings(_env_file=None, home=home)
    client = registry.connect(settings)
    first_bundle, last_bundle = (
        ForecastBundle.load(
            model_training.version_folder(settings, client, version),
            signing_key=settings.signing_key,
        )
        for version in ("1", str(retrains["version"].iloc[-1]))
    )
    if kept:  # stores the trigger never chose
        future = future_days(kept, pd.Timestamp(DAY_LIST[-1] + pd.Timedelta(days=1)), 7)
        before, after = first_bundle.predict(future).frame, last_bundle.predict(future).frame
        assert len(before) == len(kept) * 7
        pd.testing.assert_frame_equal(before, after, check_exact=True)


def test_without_drift_nothing_fires_and_nothing_is_retrained(
    undrifted: tuple[Path, str, Path], tmp_path: Path
) -> None:
    _, stdout, folder = undrifted
    gauges = pd.read_csv(folder / "store_gauges.csv")
    firing = alert_replay.degraded_by_day(gauges, DAY_LIST)
    assert set().union(*firing.values()) == set(), firing
    alert_replay.assert_rule_agrees(gauges, DAY_LIST, tmp_path)
    assert pd.read_csv(folder / "retrains.csv").empty
    assert "Retrains: none (no store stale)" in stdout


def test_accuracy_reads_the_replay_and_a_second_replay_is_refused(
    drifted: tuple[Path, str, Path],
) -> None:
    home, _, _ = drifted
    report = sfmlops(home, "accuracy", "--days", "14")
    assert report.returncode == 0, report.stderr
    assert "Realized accuracy, every store, 2015-05-08 to 2015-05-21" in report.stdout
    assert "rmspe" in report.stdout

    engine = make_engine(f"sqlite:///{home / 'sfmlops.db'}")
    with engine.connect() as connection:
        before = sales_records.sales_summary(connection)
    refused = sfmlops(home, *REPLAY)
    with engine.connect() as connection:
        after = sales_records.sales_summary(connection)
    engine.dispose()
    assert refused.returncode != 0
    assert "use --reset" in " ".join(refused.stderr.split())
    assert after == before

    bad = sfmlops(home, *REPLAY, "--drift", "3:x:2015-05-08")
    assert bad.returncode != 0
    assert "STORE:FACTOR:FROM" in bad.stderr or "--drift" in bad.stderr
