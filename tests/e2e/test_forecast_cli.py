"""`sfmlops backtest`, `train` and `predict` as a user runs them, on a small slice of stores."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest

from sfmlops.adapters.db import forecast_records, training_job_records
from sfmlops.adapters.db import issued_forecasts as records
from sfmlops.adapters.db.engine import make_engine
from sfmlops.core import columns
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services import realized_accuracy
from tests.support import alert_replay
from tests.support.cli_processes import sfmlops, start

pytestmark = pytest.mark.e2e

STORES = {str(store) for store in range(1, 9)}
FIRST_DAY = "2014-03-01"  # over a year of history: enough for two 48-day windows and more


@pytest.fixture(scope="module")
def forecast_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 stores from 2014-03-01 to the data's end, in the Rossmann layout."""
    folder = tmp_path_factory.mktemp("forecast-slice")
    for name in ("store.csv", "store_states.csv"):
        frame = pd.read_csv(ROSSMANN_DIR / name, dtype=str, keep_default_na=False)
        frame[frame["Store"].isin(STORES)].to_csv(folder / name, index=False)
    sales = pd.read_csv(ROSSMANN_DIR / "train.csv.gz", dtype=str, keep_default_na=False)
    keep = sales["Store"].isin(STORES) & (sales["Date"] >= FIRST_DAY)
    with gzip.open(folder / "train.csv.gz", "wt") as out:
        sales[keep].to_csv(out, index=False)
    return folder


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory: pytest.TempPathFactory, forecast_slice: Path) -> Path:
    """A HOME with the slice loaded and `sfmlops train` run on it.

    `--executor auto` fits these global models in the command's process; a local Ray is
    exercised by `sfmlops demo` (tests/e2e/test_cli.py) and a Ray head by
    tests/integration/test_ray_head.py.

    Prophet stays out to keep the suite short: its fits through a training job are in
    tests/integration/test_training_mlflow.py.
    """
    home = tmp_path_factory.mktemp("home")
    assert sfmlops(home, "load-data", "--path", str(forecast_slice)).returncode == 0
    result = sfmlops(
        home, "train", "--models", "gbm,seasonal_naive", "--windows", "2", "--workers", "2"
    )
    assert result.returncode == 0, result.stderr
    assert "registered sfmlops-forecaster version 1 as champion" in " ".join(result.stdout.split())
    return home


@pytest.fixture(scope="module")
def future_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The competition's test file cut to the slice's stores (dates after the data's end)."""
    test = pd.read_csv(ROSSMANN_DIR / "test.csv.gz", dtype=str, keep_default_na=False)
    path = tmp_path_factory.mktemp("future") / "test.csv"
    test[test["Store"].isin(STORES)].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def loaded_home(tmp_path_factory: pytest.TempPathFactory, forecast_slice: Path) -> Path:
    home = tmp_path_factory.mktemp("loaded")
    assert sfmlops(home, "load-data", "--path", str(forecast_slice)).returncode == 0
    return home


def test_backtest_prints_a_table_and_writes_a_report(loaded_home: Path) -> None:
    home = loaded_home

    result = sfmlops(
        home, "backtest", "--models", "gbm,seasonal_naive", "--windows", "2", "--stores", "1-6"
    )

    assert result.returncode == 0, result.stderr
    assert "champion" in result.stdout
    assert "seasonal_naive" in result.stdout
    reports = list((home / "reports").glob("backtest-*"))
    assert len(reports) == 1
    metrics = pd.read_csv(reports[0] / "metrics.csv")
    assert set(metrics["model"]) == {"gbm", "seasonal_naive", "champion"}
    # Two rolling windows and the season window: the 48 days after the data's end, a year
    # earlier (2014-06-14..07-31), reported with its coverage like every window.
    assert set(metrics["backtest_window"]) == {1, 2, 3}
    season = metrics[metrics["window_kind"] == "season"]
    assert set(season["backtest_window"]) == {1}
    assert set(season["window_start"]) == {"2014-06-14"}
    assert season["coverage_80"].notna().all()
    assert "season 2014-06-14..07-31" in result.stdout
    gbm = metrics[(metrics["model"] == "gbm") & (metrics["backtest_window"] == 3)]
    naive = metrics[(metrics["model"] == "seasonal_naive") & (metrics["backtest_window"] == 3)]
    assert float(gbm["rmspe"].iloc[0]) < float(naive["rmspe"].iloc[0])
    series = pd.read_csv(reports[0] / "series_metrics.csv")
    assert set(series["store_id"]) == set(range(1, 7))
    for plot in ("error_distribution.png", "forecast_vs_actual.png"):
        assert (reports[0] / plot).read_bytes()[:4] == b"\x89PNG"


def test_bad_options_fail_cleanly(loaded_home: Path) -> None:
    home = loaded_home
    for args, message in (
        (("backtest", "--models", "gbm,arima"), "unknown model(s) arima"),
        (("train", "--stores", "1,9999"), "unknown store(s): 9999"),
        (("backtest", "--stores", "one"), "'one' is not a store id"),
    ):
        result = sfmlops(home, *args)
        assert result.returncode == 1, args
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    assert not (home / "models").exists()


def test_the_server_loads_a_gbm_champion_with_openmp_threads_that_sleep_when_idle(
    trained_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenMP runtimes print their settings as they load; a spin count of 0 is the passive
    # wait policy, 300,000 the default's busy wait.
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("OMP_DISPLAY_ENV", "VERBOSE")
    process, url = start(trained_home)  # healthy: the champion is loaded
    try:
        assert httpx.get(f"{url}/ready", timeout=10).json()["status"] == "ready"
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()

    spin_counts = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", output)
    assert spin_counts, "LightGBM's OpenMP runtime did not load"
    assert set(spin_counts) == {"0"}


def test_train_registers_a_champion_that_predict_and_pyfunc_agree_on(
    trained_home: Path, future_file: Path, tmp_path: Path
) -> None:
    output = tmp_path / "submission.csv"

    result = sfmlops(trained_home, "predict", "--future", str(future_file), "--output", str(output))

    assert result.returncode == 0, result.stderr
    # A new file's usual permissions (0666 less the umask), not a temporary file's 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask
    submission = pd.read_csv(output)
    future = pd.read_csv(future_file)
    assert list(submission.columns) == [
        "Id",
        "Sales",
        "Sales_lower",
        "Sales_upper",
        "Sales_lower_95",
        "Sales_upper_95",
    ]
    assert submission["Id"].tolist() == future["Id"].tolist()
    closed = (future["Open"] == 0).to_numpy()
    assert (submission.loc[closed, "Sales"] == 0).all()
    open_days = submission[~closed]
    assert (open_days["Sales"] > 1000).all()
    # An interval contains its point forecast and is never empty on an open day.
    assert (open_days["Sales_lower"] <= open_days["Sales"]).all()
    assert (open_days["Sales"] <= open_days["Sales_upper"]).all()
    assert (open_days["Sales_lower"] < open_days["Sales_upper"]).all()
    assert (open_days["Sales_lower_95"] <= open_days["Sales_lower"]).all()
    assert (open_days["Sales_upper"] <= open_days["Sales_upper_95"]).all()
    assert (open_days["Sales_lower_95"] < open_days["Sales_lower"]).mean() > 0.9
    # Any MLflow client with sfmlops installed gets the same forecasts from the registry.
    # Both URIs: `models:/` names resolve in the registry, which earlier tests in this
    # process may have pointed elsewhere.
    mlflow.set_tracking_uri(f"sqlite:///{trained_home / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{trained_home / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/sfmlops-forecaster@champion")
    rows = future.rename(columns={"Store": "store_id", "Date": "sales_date", "Open": "open"})
    rows = rows.assign(
        sales_date=pd.to_datetime(rows["sales_date"]),
        promo=future["Promo"],
        state_holiday=future["StateHoliday"].astype(str),
        school_holiday=future["SchoolHoliday"],
        open=rows["open"].fillna(1),
    )[["store_id", "sales_date", "open", "promo", "state_holiday", "school_holiday"]]
    served = model.predict(rows)
    assert served["yhat"].round(2).tolist() == submission["Sales"].tolist()


def several_problems(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[0, "Date"] = "2015-13-45"
    frame.loc[1, "Promo"] = "yes"
    frame.loc[2, "Store"] = "9999"
    return frame


@pytest.mark.parametrize(
    ("change", "messages"),
    [
        (lambda f: f.drop(columns=["Promo"]), ["column Promo: missing column"]),
        (
            several_problems,
            [
                "line 2, column Date: not a date",
                "line 3, column Promo: must be 0 or 1",
                "line 4, column Store: unknown store",
            ],
        ),
        (
            # 2015-06-03 is a Wednesday, like the row's DayOfWeek: only the date is wrong.
            lambda f: f.assign(Date=f["Date"].mask(f.index == 5, "2015-06-03")),
            ["line 7, column Date: not after the data's end (2015-06-13)"],
        ),
        (lambda f: f.iloc[0:0], ["column Id: a header but no rows to forecast"]),
        (
            # The fourth data row (line 5) repeats the first (line 2) under another Id: both
            # are named by their file lines, as every other message names rows.
            lambda f: pd.concat([f.iloc[:3], f.iloc[[0]].assign(Id="999999"), f.iloc[3:]]),
            ["line 5, column Date: duplicate store, product and date (first seen at line 2)"],
        ),
    ],
    ids=["missing-column", "bad-values", "past-date", "header-only", "duplicate"],
)
def test_predict_rejects_a_bad_future_file_and_writes_nothing(
    trained_home: Path,
    future_file: Path,
    tmp_path: Path,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    messages: list[str],
) -> None:
    frame = pd.read_csv(future_file, dtype=str, keep_default_na=False)
    bad = tmp_path / "bad.csv"
    change(frame).to_csv(bad, index=False)
    output = tmp_path / "submission.csv"

    result = sfmlops(trained_home, "predict", "--future", str(bad), "--output", str(output))

    assert result.returncode == 1
    for message in messages:
        assert message in result.stderr
    assert "no output was written" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()
    assert list(tmp_path.glob(".submission.csv*")) == []


def test_predict_without_a_trained_bundle_says_so(tmp_path: Path, future_file: Path) -> None:
    result = sfmlops(
        tmp_path / "home",
        "predict",
        "--future",
        str(future_file),
        "--output",
        str(tmp_path / "o.csv"),
    )
    assert result.returncode == 1
    assert "run `sfmlops train` first" in result.stderr
    assert not (tmp_path / "o.csv").exists()


def test_predict_into_a_missing_folder_fails_and_creates_nothing(
    tmp_path: Path, future_file: Path
) -> None:
    output = tmp_path / "typo" / "o.csv"

    result = sfmlops(
        tmp_path / "home", "predict", "--future", str(future_file), "--output", str(output)
    )

    assert result.returncode == 1
    assert f"--output: the folder {output.parent} does not exist" in result.stderr
    assert not output.parent.exists()


def test_a_new_champion_refreshes_the_precomputed_forecasts(
    tmp_path: Path, forecast_slice: Path
) -> None:
    home = tmp_path / "home"
    assert sfmlops(home, "load-data", "--path", str(forecast_slice)).returncode == 0
    train = ("train", "--models", "seasonal_naive", "--windows", "1", "--force")
    assert sfmlops(home, *train).returncode == 0
    engine = make_engine(f"sqlite:///{home / 'sfmlops.db'}")
    with engine.connect() as connection:
        first = forecast_records.latest_forecasts(connection)

    retrained = sfmlops(home, *train, "--stores", "2")

    assert retrained.returncode == 0, retrained.stderr
    assert "Refreshed the precomputed forecasts with version 2" in retrained.stdout
    with engine.connect() as connection:
        second = forecast_records.latest_forecasts(connection)
        kept = records.read_issued(connection, 2, dt.date(2015, 6, 14), dt.date(2015, 6, 20))
    engine.dispose()
    assert set(first["model_version"]) == {"1"}
    assert set(second["model_version"]) == {"2"}
    assert len(second) == len(first) == 8 * 7
    # Both versions' forecasts are kept as issued by the pipeline, once each.
    assert kept.groupby(records.MODEL_VERSION).size().to_dict() == {"1": 7, "2": 7}

    # Monday's actual of store 2 lands from a file: both versions' forecasts are scored.
    later = tmp_path / "later"
    later.mkdir()
    for name in ("store.csv", "store_states.csv"):
        shutil.copy(forecast_slice / name, later / name)
    monday = kept[kept[columns.SALES_DATE] == "2015-06-15"]
    actual = float(monday[columns.YHAT].iloc[0]) * 1.25
    row = pd.DataFrame(
        [{"Store": 2, "DayOfWeek": 1, "Date": "2015-06-15", "Sales": round(actual),
          "Customers": 500, "Open": 1, "Promo": 0, "StateHoliday": "0", "SchoolHoliday": 0}]
    )  # fmt: skip
    row.to_csv(later / "train.csv.gz", index=False)
    assert sfmlops(home, "load-data", "--path", str(later)).returncode == 0

    report = sfmlops(home, "accuracy", "--days", "7", "--store", "2")

    assert report.returncode == 0, report.stderr
    assert "Realized accuracy, store 2, 2015-06-09 to 2015-06-15" in report.stdout
    assert "0.200" in report.stdout  # RMSPE: the actual is 1.25x the forecast


def test_a_drifting_store_is_found_stale_and_retrained_alone(
    tmp_path: Path, forecast_slice: Path
) -> None:
    home = tmp_path / "home"
    assert sfmlops(home, "load-data", "--path", str(forecast_slice)).returncode == 0
    train = ("train", "--models", "seasonal_naive", "--windows", "1", "--force")
    assert sfmlops(home, *train).returncode == 0
    engine = make_engine(f"sqlite:///{home / 'sfmlops.db'}")
    with engine.connect() as connection:
        issued = pd.concat(
            records.read_issued(connection, int(store), dt.date(2015, 6, 15), dt.date(2015, 6, 19))
            for store in sorted(STORES, key=int)
        )
    engine.dispose()
    # Monday to Friday: store 3 sells three times its forecast, the others as forecast.
    actuals = pd.DataFrame(
        {
            "Store": issued[columns.STORE_ID],
            "DayOfWeek": issued[columns.SALES_DATE].dt.dayofweek + 1,
            "Date": issued[columns.SALES_DATE].dt.strftime("%Y-%m-%d"),
            "Sales": (issued[columns.YHAT] * issued[columns.STORE_ID].map({3: 3.0}).fillna(1.0)).round(),
            "Customers": 500, "Open": 1, "Promo": 0, "StateHoliday": "0", "SchoolHoliday": 0,
        }
    )  # fmt: skip
    later = tmp_path / "later"
    later.mkdir()
    for name in ("store.csv", "store_states.csv"):
        shutil.copy(forecast_slice / name, later / name)
    actuals.to_csv(later / "train.csv.gz", index=False)
    assert sfmlops(home, "load-data", "--path", str(later)).returncode == 0

    # The per-evening series /metrics exports for these days make the alert fire for store 3
    # alone, on Friday: its second evening with a week of at least 4 scored days.
    days = [pd.Timestamp(2015, 6, 15) + pd.Timedelta(days=offset) for offset in range(5)]
    engine = make_engine(f"sqlite:///{home / 'sfmlops.db'}")
    with engine.connect() as connection:
        gauges = pd.concat(
            realized_accuracy.store_gauges(connection, day.date(), 20).assign(as_of=day)
            for day in days
        )
    engine.dispose()
    firing = alert_replay.degraded_by_day(gauges, days)
    assert firing[4] == {3}, firing
    assert set().union(*firing.values()) == {3}, firing
    alert_replay.assert_rule_agrees(gauges, days, tmp_path)

    result = sfmlops(home, "pipeline", "retrain-stale", "--days", "2")

    assert result.returncode == 0, result.stderr
    stale = [line for line in result.stdout.splitlines() if line.startswith("stale:")]
    assert len(stale) == 1
    assert stale[0].startswith("stale: store 3: realized RMSPE")
    assert "version 2" in result.stdout
    engine = make_engine(f"sqlite:///{home / 'sfmlops.db'}")
    with engine.connect() as connection:
        (job,) = training_job_records.list_training_jobs(connection)
    engine.dispose()
    assert (job.status, job.stores, job.model_version) == ("succeeded", [3], "2")
    assert (job.reason or "").startswith("stale on 2 evenings up to 2015-06-19")
    jobs = sfmlops(home, "jobs")
    assert "stale on 2 evenings" in " ".join(jobs.stdout.split())
    # The registry URI too: an earlier test in this process may have set another globally.
    store = f"sqlite:///{home / 'mlflow.db'}"
    client = mlflow.MlflowClient(store, registry_uri=store)
    run = client.get_run(client.get_model_version("sfmlops-forecaster", "2").run_id)
    assert run.data.tags["sfmlops.reason"].startswith("stale on 2 evenings up to 2015-06-19")
    # Nothing stale any more in the new version's eyes: a second run retrains nothing.
    again = sfmlops(home, "pipeline", "retrain-stale", "--days", "2", "--margin", "1000")
    assert "No stale store" in again.stdout
