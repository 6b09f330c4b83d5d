"""Synthetic multi-product sales: deterministic, realistic in shape, store patterns kept."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from sfmlops.core import columns
from sfmlops.core.forecasting.gbm import GBMParams, GlobalGBMForecaster, _coded
from sfmlops.core.synthetic_sales import product_ids, synthesize_sales


def store_history(store_ids: list[int], days: int = 120) -> pd.DataFrame:
    """Daily sales of one product per store: closed on Sundays, a promotion every other week."""
    dates = pd.date_range("2015-01-05", periods=days, freq="D")
    frames = []
    for store_id in store_ids:
        is_open = (dates.dayofweek != 6).astype(int)
        promo = ((np.arange(days) // 7) % 2 == 0).astype(int) * is_open
        frames.append(
            pd.DataFrame(
                {
                    columns.STORE_ID: store_id,
                    columns.PRODUCT_ID: columns.DEFAULT_PRODUCT,
                    columns.SALES_DATE: dates,
                    columns.SALES: np.where(is_open == 1, 5000.0 + 1000.0 * promo + store_id, 0.0),
                    columns.CUSTOMERS: pd.array(np.where(is_open == 1, 600, 0), dtype="Int64"),
                    columns.OPEN: is_open,
                    columns.PROMO: promo,
                    columns.STATE_HOLIDAY: "0",
                    columns.SCHOOL_HOLIDAY: 0,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def synthesized(history: pd.DataFrame, products: int, seed: int = 7) -> pd.DataFrame:
    return pd.concat(synthesize_sales(history, products, seed), ignore_index=True)


def test_the_same_seed_gives_the_same_rows_and_another_seed_other_rows() -> None:
    history = store_history([1, 2])
    first = synthesized(history, 20)
    pd.testing.assert_frame_equal(first, synthesized(history, 20))
    assert not first[columns.SALES].equals(synthesized(history, 20, seed=8)[columns.SALES])


def test_a_store_gets_the_same_products_whichever_other_stores_are_synthesised() -> None:
    alone = synthesized(store_history([2]), 10)
    with_others = synthesized(store_history([1, 2, 3]), 10)
    pd.testing.assert_frame_equal(
        alone, with_others[with_others[columns.STORE_ID] == 2].reset_index(drop=True)
    )


def test_every_series_is_a_store_and_product_with_the_store_days_and_covariates() -> None:
    history = store_history([1, 2, 3])
    frame = synthesized(history, 30)
    assert list(frame.columns) == list(columns.SALES_COLUMNS)
    assert frame.groupby(list(columns.SERIES_KEY)).ngroups == 3 * 30
    assert set(frame[columns.PRODUCT_ID]) == set(product_ids(30))
    assert not frame.duplicated(list(columns.SALES_KEY)).any()
    # Days, opening and promotions are the store's own.
    merged = frame.merge(
        history, on=[columns.STORE_ID, columns.SALES_DATE], suffixes=("", "_store")
    )
    assert len(merged) == len(frame)
    assert (merged[columns.OPEN] == merged[f"{columns.OPEN}_store"]).all()
    assert (merged[columns.PROMO] == merged[f"{columns.PROMO}_store"]).all()
    assert (frame.loc[frame[columns.OPEN] == 0, columns.SALES] == 0).all()
    assert (frame[columns.SALES] >= 0).all()
    assert (frame[columns.SALES] == frame[columns.SALES].round()).all()


def test_products_add_up_to_about_the_store_and_differ_in_size_and_timing() -> None:
    history = store_history([1], days=300)
    frame = synthesized(history, 60)
    open_days = frame[frame[columns.OPEN] == 1]
    daily_total = open_days.groupby(columns.SALES_DATE)[columns.SALES].sum()
    store_daily = history.set_index(columns.SALES_DATE).loc[daily_total.index, columns.SALES]
    # Shares sum to one; profiles and noise move single days, not the level.
    assert (daily_total / store_daily).median() == pytest.approx(1.0, abs=0.25)
    per_series = frame.groupby(columns.PRODUCT_ID)
    days_sold = per_series.size()
    assert days_sold.max() == 300
    assert days_sold.min() < 300, "some products launch late or end early"
    first_day = per_series[columns.SALES_DATE].min()
    last_day = per_series[columns.SALES_DATE].max()
    assert (first_day > history[columns.SALES_DATE].min()).any(), "a product launched late"
    assert (last_day < history[columns.SALES_DATE].max()).any(), "a product discontinued"
    zero_share = (
        open_days.assign(zero=open_days[columns.SALES] == 0)
        .groupby(columns.PRODUCT_ID)["zero"]
        .mean()
    )
    assert (zero_share > 0.3).any(), "intermittent low sellers"
    mean_sales = open_days.groupby(columns.PRODUCT_ID)[columns.SALES].mean()
    assert mean_sales.max() > 2 * mean_sales.median(), "a long tail of popularity"


def test_one_product_keeps_the_store_total_as_its_level() -> None:
    history = store_history([4])
    frame = synthesized(history, 1)
    assert len(frame) == len(history)
    assert set(frame[columns.PRODUCT_ID]) == {"P001"}


def test_more_than_one_product_per_day_of_a_store_is_refused() -> None:
    history = store_history([1])
    twice = pd.concat([history, history.assign(**{columns.PRODUCT_ID: "other"})])
    with pytest.raises(ValueError, match="one row per day"):
        synthesized(twice, 3)


def store_metadata(store_ids: list[int]) -> pd.DataFrame:
    count = len(store_ids)
    return pd.DataFrame(
        {
            columns.STORE_ID: pd.array(store_ids, dtype="Int64"),
            columns.STORE_TYPE: "a",
            columns.ASSORTMENT: "a",
            columns.COMPETITION_DISTANCE: 500.0,
            columns.COMPETITION_OPEN_SINCE_MONTH: pd.array([None] * count, dtype="Int64"),
            columns.COMPETITION_OPEN_SINCE_YEAR: pd.array([None] * count, dtype="Int64"),
            columns.PROMO2: pd.array([0] * count, dtype="Int8"),
            columns.PROMO2_SINCE_WEEK: pd.array([None] * count, dtype="Int64"),
            columns.PROMO2_SINCE_YEAR: pd.array([None] * count, dtype="Int64"),
            columns.PROMO_INTERVAL: None,
            columns.STATE: "HE",
        }
    )


def test_the_global_model_forecasts_each_product_at_its_own_level() -> None:
    history = synthesized(store_history([1, 2], days=200), 6)
    split = history[columns.SALES_DATE].max() - pd.Timedelta(days=14)
    train, test = (
        history[history[columns.SALES_DATE] <= split],
        history[history[columns.SALES_DATE] > split],
    )
    test = test[test[columns.OPEN] == 1]
    model = GlobalGBMForecaster(params=GBMParams(rounds=40, threads=1), calibration_days=0)
    forecast = model.fit(train, store_metadata([1, 2])).predict(
        test[list(columns.FUTURE_COLUMNS)].reset_index(drop=True)
    )
    keys = list(columns.SERIES_KEY)
    predicted = forecast.groupby(keys)[columns.YHAT].mean()
    actual = test.groupby(keys)[columns.SALES].mean()
    # The products of a store differ by orders of magnitude; one level per store cannot
    # follow them, one per series can.
    assert predicted.nunique() == len(predicted)
    ratio = (predicted / actual.reindex(predicted.index)).where(actual > 50)
    assert ratio.dropna().between(0.5, 2.0).all(), ratio
    # The series index the first request built is reused by later ones (rows in any order
    # coded as a fresh index codes them) and is no part of the saved model.
    assert model.series_codes_ is not None
    later = test[list(columns.FUTURE_COLUMNS)].iloc[::-1].reset_index(drop=True)
    index = vars(model)["_series_index"]
    pd.testing.assert_frame_equal(
        _coded(later, model.series_codes_, index), _coded(later, model.series_codes_)
    )
    assert "_series_index" not in vars(pickle.loads(pickle.dumps(model)))
