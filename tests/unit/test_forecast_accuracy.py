"""The forecasting core on the bundled Rossmann data: accuracy on 50 stores' last 48-day
window, and forecasts that do not depend on what else a request asks for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics, model_selection
from sfmlops.core.forecasting.bundle import (
    ForecastBundle,
    complete_future,
    future_days,
    store_states,
    usual_open_weekdays,
    usual_promo_cycle,
)
from sfmlops.core.forecasting.features import Calendar, build_features
from sfmlops.core.forecasting.gbm import GBMParams, GlobalGBMForecaster
from sfmlops.core.forecasting.naive import SeasonalNaiveForecaster
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services.loading import Dataset, read_dataset

STORES = range(1, 51)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return read_dataset(ROSSMANN_DIR)


@pytest.fixture(scope="module")
def report(dataset: Dataset) -> model_selection.BacktestReport:
    sales = dataset.sales[dataset.sales[columns.STORE_ID].isin(STORES)]
    stores = dataset.stores[dataset.stores[columns.STORE_ID].isin(STORES)]
    return model_selection.backtest(sales, stores, ["gbm", "seasonal_naive"], windows=1)


def test_gbm_beats_the_baseline_on_the_last_window(report: model_selection.BacktestReport) -> None:
    rows = report.reported().set_index(columns.MODEL)
    gbm, naive = rows.loc["gbm"], rows.loc["seasonal_naive"]
    assert gbm[metrics.RMSPE] <= 0.15
    assert gbm[metrics.RMSPE] <= 0.7 * naive[metrics.RMSPE]
    assert 0.70 <= gbm[metrics.COVERAGE_80] <= 0.90
    assert gbm[metrics.COVERAGE_80] < gbm[metrics.COVERAGE_95]
    assert gbm[metrics.DAYS] > 40 * 48 * 0.8  # the whole window was scored, not a sliver
    window = report.windows[-1]
    assert window.end == pd.Timestamp("2015-06-13")


def test_a_series_forecasts_alike_alone_and_in_a_request_for_every_store(
    dataset: Dataset,
) -> None:
    # A small request reads only its stores' context rows and their states' holidays,
    # predicts on one thread and is routed by a lookup; none of it may change a forecast.
    # Every store for 14 days, then stores alone. A state has a holiday when any of its
    # stores reports one, so holidays are given (or left to derive) per state, as they are;
    # openings and promotions per store, some missing. About 3 s on 2 cores (a small gbm on
    # the last 100 days; the data is read once for this file).
    last = dataset.sales[columns.SALES_DATE].max()
    history = dataset.sales[dataset.sales[columns.SALES_DATE] > last - pd.Timedelta(days=100)]
    gbm = GlobalGBMForecaster(
        GBMParams(rounds=20, num_leaves=15, threads=1), calibration_days=0
    ).fit(history, dataset.stores)
    naive = SeasonalNaiveForecaster().fit(history, dataset.stores)
    series = history[[columns.STORE_ID, columns.PRODUCT_ID]].drop_duplicates()
    champions = series.assign(
        **{columns.MODEL: np.where(series[columns.STORE_ID] % 10 == 0, "seasonal_naive", "gbm")}
    )
    bundle = ForecastBundle(
        {"gbm": gbm, "seasonal_naive": naive},
        champions,
        usual_open_weekdays(history),
        last,
        usual_promo=usual_promo_cycle(history),
        states=store_states(dataset.stores),
    )
    keys = list(zip(series[columns.STORE_ID], series[columns.PRODUCT_ID], strict=True))
    future = future_days(keys, last + pd.Timedelta(days=1), 14)
    rng = np.random.default_rng(21)
    day = (future[columns.SALES_DATE] - last).dt.days.to_numpy()
    store = future[columns.STORE_ID].to_numpy()
    state = (
        future[columns.STORE_ID]
        .map(dataset.stores.set_index(columns.STORE_ID)[columns.STATE])
        .astype(str)
        .to_numpy()
    )
    future[columns.OPEN] = np.where((store % 7 == 1) & (day >= 4) & (day <= 8), 0.0, 1.0)
    future[columns.PROMO] = (day % 14 < 5).astype(float)
    for name in (columns.OPEN, columns.PROMO):
        future[name] = future[name].where(rng.random(len(future)) > 0.1, None)
    future[columns.STATE_HOLIDAY] = np.where(
        np.isin(state, ["BY", "HE"]),
        None,
        np.where(np.isin(state, ["NW", "BE"]) & (day == 3), "a", "0"),
    )
    future[columns.SCHOOL_HOLIDAY] = np.where(
        np.isin(state, ["SN"]), np.nan, (np.isin(state, ["BY", "NW"]) & (day >= 6)).astype(float)
    )
    everything = bundle.predict(future)
    assert everything.champions == {
        "gbm": int((champions[columns.MODEL] == "gbm").sum()),
        "seasonal_naive": int((champions[columns.MODEL] == "seasonal_naive").sum()),
    }

    # The gbm's features are those of the calendar of its whole context and the request.
    assert gbm.profile_ is not None
    assert gbm.stats_ is not None
    assert gbm.context_ is not None
    completed, _ = complete_future(future, bundle.usual_open, bundle.usual_promo, bundle.states)
    whole = Calendar.of(pd.concat([gbm.context_, completed], ignore_index=True), gbm.profile_)
    pd.testing.assert_frame_equal(
        build_features(completed, gbm.profile_, gbm.stats_, gbm._calendar_of(completed)),
        build_features(completed, gbm.profile_, gbm.stats_, whole),
    )

    alone = [1, 2, 3, 10, 14, 25, 40, 53, 100, 262, 500, 733, 817, 1000, 1114, 1115]
    assert len(set(state[np.isin(store, alone)])) >= 6
    for store_id in alone:
        rows = np.flatnonzero(store == store_id)
        forecast = bundle.predict(future.iloc[rows])
        pd.testing.assert_frame_equal(
            forecast.frame, everything.frame.iloc[rows].reset_index(drop=True)
        )
        assert forecast.covariates is not None
        assert everything.covariates is not None
        pd.testing.assert_frame_equal(
            forecast.covariates, everything.covariates.iloc[rows].reset_index(drop=True)
        )
    some = np.flatnonzero(np.isin(store, alone))
    pd.testing.assert_frame_equal(
        bundle.predict(future.iloc[some]).frame,
        everything.frame.iloc[some].reset_index(drop=True),
    )
