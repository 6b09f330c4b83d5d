"""Real forecast APIs for the dashboard's tests: one serving a trained champion, one without.

Both databases hold the 20 stores of `rossmann_slice` plus store 21, which has never sold
anything; the trained API's champion is a `seasonal_naive` training job on stores 1-4,
registered in its home's embedded MLflow.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from playwright.sync_api import Browser, Page, sync_playwright

from sfmlops.adapters.db import issued_forecasts, sales_records
from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.core import columns
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services import loading
from sfmlops.settings import Settings
from tests.support import model_registry
from tests.support.browser import BASE_PATH, CHROMIUM, CHROMIUM_ARGS, PAGE_MS
from tests.support.cli_processes import environment
from tests.support.dashboard_harness import (
    NO_TRAINING_JOBS,
    STORE_WITHOUT_SALES,
    TRAINED_STORES,
    RunningApi,
    sfmlops_command,
    start_service,
    stop_service,
)
from tests.support.network import free_port


def _home_with_data(home: Path, rossmann_slice: Path) -> Path:
    """A home whose database holds the slice plus a store without sales."""
    data = home.parent / f"{home.name}-data"
    shutil.copytree(rossmann_slice, data)
    for name in ("store.csv", "store_states.csv"):
        full = pd.read_csv(ROSSMANN_DIR / name, dtype=str, keep_default_na=False)
        extra = full[full["Store"] == str(STORE_WITHOUT_SALES)]
        extra.to_csv(data / name, mode="a", header=False, index=False)
    home.mkdir(parents=True)
    engine = make_engine(Settings(_env_file=None, home=home).effective_database_url)
    migrate(engine)
    loading.load_folder(engine, data)
    engine.dispose()
    return home


def _start_api(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_service(
        sfmlops_command("serve", "--port", str(port)),
        environment(home, model_poll_seconds="1"),
        f"{url}/health",
        home / "api.log",
    )
    return process, url


@pytest.fixture(scope="session")
def trained_api(
    tmp_path_factory: pytest.TempPathFactory, rossmann_slice: Path
) -> Iterator[RunningApi]:
    """An API serving a champion of stores 1-4 (retrains in tests make new versions)."""
    home = _home_with_data(tmp_path_factory.mktemp("ui") / "trained", rossmann_slice)
    settings = Settings(_env_file=None, home=home)
    engine = make_engine(settings.effective_database_url)
    try:
        model_registry.train_champion(settings, engine, TRAINED_STORES)
    finally:
        engine.dispose()
    process, url = _start_api(home)
    yield RunningApi(url, home)
    stop_service(process)


# The trained store whose past forecasts were issued and scored (`scored_store`).
SCORED_STORE = 4


@pytest.fixture(scope="session")
def scored_store(trained_api: RunningApi) -> int:
    """Store 4's forecasts of the last 5 days kept as issued (90 % of what it sold, one day
    missed by half) and scored against its actuals, in the trained API's database."""
    engine = make_engine(Settings(_env_file=None, home=trained_api.home).effective_database_url)
    try:
        with engine.begin() as connection:
            last = sales_records.latest_sales_date(connection)
            assert last is not None
            first = last - dt.timedelta(days=4)
            days = sales_records.read_sales(connection, [SCORED_STORE], first, last)
            yhat = days[columns.SALES].astype(float) * 0.9
            yhat.iloc[0] = float(days[columns.SALES].iloc[0]) * 0.5
            frame = days[[columns.STORE_ID, columns.PRODUCT_ID, columns.SALES_DATE]].assign(
                **{name: yhat.to_numpy() for name in columns.FORECAST_VALUES},
                **{issued_forecasts.BACKTEST_RMSPE: 0.1},
            )
            # The first champion's version: the one trained_api registered.
            issued_forecasts.record_issued(connection, frame, "1", first, "api")
            issued_forecasts.score_days(
                connection, set(days[columns.SALES_DATE].dt.date), [SCORED_STORE]
            )
    finally:
        engine.dispose()
    return SCORED_STORE


@pytest.fixture(scope="session")
def untrained_api(
    tmp_path_factory: pytest.TempPathFactory, rossmann_slice: Path
) -> Iterator[RunningApi]:
    """An API over the same data with no model trained yet."""
    home = _home_with_data(tmp_path_factory.mktemp("ui") / "untrained", rossmann_slice)
    process, url = _start_api(home)
    yield RunningApi(url, home)
    stop_service(process)


@pytest.fixture
def unreachable_url() -> str:
    """An address nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(autouse=True)
def _fresh_dashboard_caches() -> Iterator[None]:
    # The dashboard caches its settings, client and store list per process: each test
    # starts without them so it talks to its own API.
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture(scope="module")
def dashboard_url(trained_api: RunningApi) -> Iterator[str]:
    """`sfmlops ui` under /dashboard, talking to the trained API."""
    port = free_port()
    process = start_service(
        sfmlops_command("ui", "--port", str(port)),
        environment(trained_api.home, api_url=trained_api.url, ui_base_path=BASE_PATH),
        f"http://127.0.0.1:{port}/{BASE_PATH}/_stcore/health",
        trained_api.home / "ui.log",
    )
    yield f"http://127.0.0.1:{port}/{BASE_PATH}/"
    stop_service(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, driven by Playwright."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: scripts/install-system-deps.sh installs Chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser tab with a desktop-sized window."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    context.set_default_timeout(PAGE_MS)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="session")
def training_jobs_available() -> bool:
    """Whether `sfmlops train` can run as a training job (it takes --job-id).

    The API's runners start `sfmlops train --job-id ID --stores ...`; without that option
    a retrain can only fail.
    """
    usage = subprocess.run(
        sfmlops_command("train", "--help"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=environment(Path("/nonexistent-home")),
    ).stdout
    return "--job-id" in usage


@pytest.fixture
def training_jobs_run(training_jobs_available: bool) -> None:
    """Skip a test that needs a retrain to complete when training jobs cannot run."""
    if not training_jobs_available:
        pytest.skip(NO_TRAINING_JOBS)
