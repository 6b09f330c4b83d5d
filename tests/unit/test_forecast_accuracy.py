"""Accuracy on real data: 50 bundled Rossmann stores, the last 48-day window."""

from __future__ import annotations

import pandas as pd
import pytest

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics, model_selection
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services.loading import read_dataset

STORES = range(1, 51)


@pytest.fixture(scope="module")
def report() -> model_selection.BacktestReport:
    dataset = read_dataset(ROSSMANN_DIR)
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
