"""The forecasting core on small synthetic frames with known structure."""

from __future__ import annotations

import copy
import datetime as dt
import json
import pickle
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from sfmlops.core import columns
from sfmlops.core.forecasting import gbm, metrics, model_selection
from sfmlops.core.forecasting.backtest import (
    CHAMPION,
    POINT_SCALE,
    ROLLING,
    SEASON,
    UNCALIBRATED,
    WINDOW_KIND,
    backtest_windows,
    calibration_of,
    champion_scored,
    run_backtest,
    select_champions,
)
from sfmlops.core.forecasting.base import (
    Forecaster,
    IntervalCalibration,
    UnknownSeriesError,
    as_future,
)
from sfmlops.core.forecasting.bundle import (
    ASSUMED_OPEN,
    ASSUMED_PROMO,
    ASSUMED_STATE_HOLIDAY,
    LEVEL_FACTOR,
    Forecast,
    ForecastBundle,
    complete_future,
    future_days,
    store_states,
    usual_open_weekdays,
    usual_promo_cycle,
)
from sfmlops.core.forecasting.executors import ProcessPoolTaskExecutor, SequentialExecutor, chunks
from sfmlops.core.forecasting.features import (
    PROXIMITY_CAP_DAYS,
    REOPENING_CAP_DAYS,
    Calendar,
    CalendarCarry,
    StoreStats,
    build_features,
    state_flags,
    store_profile,
)
from sfmlops.core.forecasting.gbm import (
    GBMParams,
    GlobalGBMForecaster,
    shard_rows,
    store_shards,
)
from sfmlops.core.forecasting.models import UnknownModelError, model_set
from sfmlops.core.forecasting.naive import SeasonalNaiveForecaster
from sfmlops.core.forecasting.plan import apply_plan, as_plan
from sfmlops.core.forecasting.plan import by_store as plan_by_store
from sfmlops.core.forecasting.prophet_model import ProphetForecaster
from sfmlops.core.forecasting.retraining import (
    GlobalModelNotInBundleError,
    level_factor,
    retrain_series,
)
from sfmlops.services.api import forecast_requests, serving

# Monday .. Sunday multipliers; Sundays closed.
WEEKLY = np.array([1.3, 1.0, 0.9, 0.95, 1.1, 1.4, 0.0])
PROMO_LIFT = 1.25
SMALL_GBM = GBMParams(
    rounds=120, learning_rate=0.1, num_leaves=15, min_data_in_leaf=20, threads=1, members=1
)


def synthetic_sales(
    stores: int = 6, days: int = 420, noise: float = 0.03, walk: float = 0.0, seed: int = 3
) -> pd.DataFrame:
    """Daily sales with a known weekly pattern, promo lift, closed Sundays."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2014-01-06", periods=days, freq="D")  # starts on a Monday
    parts = []
    for store in range(1, stores + 1):
        level = 4000 + 800 * store
        drift = np.exp(np.cumsum(rng.normal(0, walk, days))) if walk else np.ones(days)
        weekday = dates.dayofweek.to_numpy()
        promo = ((dates.isocalendar().week.to_numpy() % 2) == 0) & (weekday < 5)
        is_open = weekday != 6
        sales = (
            level
            * drift
            * WEEKLY[weekday]
            * np.where(promo, PROMO_LIFT, 1.0)
            * np.exp(rng.normal(0, noise, days))
        )
        parts.append(
            pd.DataFrame(
                {
                    columns.STORE_ID: store,
                    columns.PRODUCT_ID: columns.DEFAULT_PRODUCT,
                    columns.SALES_DATE: dates,
                    columns.SALES: np.where(is_open, sales.round(), 0.0),
                    columns.CUSTOMERS: pd.array(np.where(is_open, 500, 0), dtype="Int64"),
                    columns.OPEN: is_open.astype("int8"),
                    columns.PROMO: promo.astype("int8"),
                    columns.STATE_HOLIDAY: "0",
                    columns.SCHOOL_HOLIDAY: np.int8(0),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def synthetic_stores(stores: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            columns.STORE_ID: pd.array(range(1, stores + 1), dtype="Int64"),
            columns.STORE_TYPE: ["a", "b", "c", "d", "a", "c"][:stores] * (stores // 6 or 1),
            columns.ASSORTMENT: "a",
            columns.COMPETITION_DISTANCE: 500.0,
            columns.COMPETITION_OPEN_SINCE_MONTH: pd.array([None] * stores, dtype="Int64"),
            columns.COMPETITION_OPEN_SINCE_YEAR: pd.array([None] * stores, dtype="Int64"),
            columns.PROMO2: pd.array([0] * stores, dtype="Int8"),
            columns.PROMO2_SINCE_WEEK: pd.array([None] * stores, dtype="Int64"),
            columns.PROMO2_SINCE_YEAR: pd.array([None] * stores, dtype="Int64"),
            columns.PROMO_INTERVAL: None,
            columns.STATE: ["HE", "BY", "HE", "NW", "BY", "HE"][:stores],
        }
    )


def split(history: pd.DataFrame, days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    cutoff = history[columns.SALES_DATE].max() - pd.Timedelta(days=days)
    return (
        history[history[columns.SALES_DATE] <= cutoff],
        history[history[columns.SALES_DATE] > cutoff].reset_index(drop=True),
    )


@pytest.fixture(scope="module")
def sales() -> pd.DataFrame:
    return synthetic_sales()


@pytest.fixture(scope="module")
def stores() -> pd.DataFrame:
    return synthetic_stores()


@pytest.fixture(scope="module")
def fitted_gbm(sales: pd.DataFrame, stores: pd.DataFrame) -> GlobalGBMForecaster:
    seen, _ = split(sales, 28)
    return GlobalGBMForecaster(SMALL_GBM).fit(seen, stores)


def test_gbm_recovers_the_weekly_pattern_and_promo_lift(
    sales: pd.DataFrame, fitted_gbm: GlobalGBMForecaster
) -> None:
    _, later = split(sales, 28)
    forecast = fitted_gbm.predict(as_future(later))
    plain = (later[columns.PROMO] == 0) & (later[columns.OPEN] == 1)
    weekday = later[columns.SALES_DATE].dt.dayofweek
    by_day = forecast[plain.to_numpy()].groupby(weekday[plain].to_numpy())[columns.YHAT].mean()
    shape = by_day / by_day.mean()
    expected = WEEKLY[:6] / WEEKLY[:6].mean()
    np.testing.assert_allclose(shape.to_numpy(), expected, rtol=0.04)
    assert metrics.rmspe(later[columns.SALES].to_numpy(), forecast[columns.YHAT].to_numpy()) < 0.06


def test_a_gbm_saved_before_series_codes_still_forecasts(
    sales: pd.DataFrame, fitted_gbm: GlobalGBMForecaster
) -> None:
    # Bundles registered before multi-product series codes unpickle without the attribute.
    _, later = split(sales, 28)
    future = as_future(later)
    expected = fitted_gbm.predict(future)
    older = copy.copy(fitted_gbm)
    del older.series_codes_

    pd.testing.assert_frame_equal(older.predict(future), expected)


def test_the_calendar_counts_days_to_events_within_each_store_and_state_only() -> None:
    # Store 1 (state 0) has every kind of event; store 2 (state 1) none. Rows arrive
    # shuffled; each group's scans must stop at its own first and last day.
    dates = pd.date_range("2015-01-01", "2015-01-10", freq="D")  # Thursday to Saturday
    day = {date.day: date for date in dates}
    rows = pd.DataFrame(
        {
            columns.STORE_ID: np.repeat([1, 2], len(dates)),
            columns.SALES_DATE: np.tile(dates, 2),
            columns.OPEN: 1,
            columns.PROMO: 0,
            columns.STATE_HOLIDAY: "0",
            columns.SCHOOL_HOLIDAY: 0,
        }
    )
    store_1 = rows[columns.STORE_ID] == 1
    on = rows[columns.SALES_DATE].dt.day
    rows.loc[store_1 & (on == 1), columns.STATE_HOLIDAY] = "a"
    rows.loc[store_1 & on.between(5, 7), columns.SCHOOL_HOLIDAY] = 1
    rows.loc[store_1 & on.between(6, 8), columns.OPEN] = 0  # Tuesday to Thursday
    rows.loc[store_1 & on.between(5, 9), columns.PROMO] = 1
    profile = pd.DataFrame({columns.STORE_ID: [1, 2], columns.STATE: [0, 1]})

    calendar = Calendar.of(rows.sample(frac=1.0, random_state=3), profile)

    state = calendar.state_days.set_index([columns.STATE, columns.SALES_DATE])
    store = calendar.store_days.set_index([columns.STORE_ID, columns.SALES_DATE])
    first, last = day[1], day[10]
    assert state.loc[(0, first), "days_before_state_holiday"] == 0
    assert state.loc[(0, last), "days_after_state_holiday"] == 9
    assert state.loc[(0, first), "days_before_school_holiday"] == 4
    assert state.loc[(0, last), "days_after_school_holiday"] == 3
    school = state.loc[0].loc[day[5] : day[7]]
    assert school["days_into_school_holiday"].tolist() == [1, 2, 3]
    assert school["days_left_school_holiday"].tolist() == [3, 2, 1]
    assert store.loc[(1, first), "days_before_promo_start"] == 4
    assert store.loc[(1, last), "days_after_promo_end"] == 1
    assert store.loc[(1, first), "days_before_long_closure"] == 5
    assert store.loc[(1, last), "days_after_long_closure"] == 2
    assert store.loc[(1, day[9]), "days_after_closure"] == 1
    quiet_state = state.loc[1]
    assert (quiet_state.filter(like="days_into") == 0).all().all()
    assert (quiet_state.filter(regex="days_(after|before)") == PROXIMITY_CAP_DAYS).all().all()
    quiet_store = store.loc[2]
    assert (quiet_store.filter(like="long_closure") == REOPENING_CAP_DAYS).all().all()
    short = quiet_store.drop(columns=quiet_store.filter(like="long_closure").columns)
    assert (short == PROXIMITY_CAP_DAYS).all().all()


def test_a_calendar_carried_from_history_gives_later_days_the_calendar_of_both() -> None:
    # Stores and states whose promotions, closed runs and school holidays cross the end of
    # their history (at random, with gaps and stores or states without history, and later
    # rows given twice): the later days' calendar built from the history's carry alone must
    # equal, value for value, the calendar of the history and the later rows together.
    generator = np.random.default_rng(7)
    store_ids = np.arange(1, 241)
    profile = pd.DataFrame({columns.STORE_ID: store_ids, columns.STATE: store_ids % 7})
    history_end = pd.Timestamp("2015-03-20")

    def rows_of(stores: np.ndarray, first: np.ndarray, days: int) -> pd.DataFrame:
        dates = first[:, None] + pd.to_timedelta(np.arange(days), unit="D").to_numpy()
        count = dates.size
        # Runs rather than coin flips, so that runs cross the end of the history.
        return pd.DataFrame(
            {
                columns.STORE_ID: np.repeat(stores, days),
                columns.SALES_DATE: dates.ravel(),
                columns.OPEN: (np.cumsum(generator.random(count) < 0.3) % 3 != 0).astype(int),
                columns.PROMO: np.cumsum(generator.random(count) < 0.25) % 2,
                columns.STATE_HOLIDAY: np.where(generator.random(count) < 0.03, "a", "0"),
                columns.SCHOOL_HOLIDAY: (np.cumsum(generator.random(count) < 0.15) % 2),
            }
        )

    with_history = store_ids[store_ids % 11 != 0]
    history = rows_of(
        with_history,
        np.full(len(with_history), (history_end - pd.Timedelta(days=29)).to_datetime64()),
        30,
    )
    # Some stores' history ends a few days early; later days start 1 to 3 days after it.
    history = history[
        history[columns.SALES_DATE]
        <= history_end - pd.to_timedelta((history[columns.STORE_ID] % 4 == 0) * 3, unit="D")
    ]
    later = rows_of(
        store_ids,
        (history_end + pd.to_timedelta(1 + store_ids % 3, unit="D")).to_numpy(),
        12,
    )
    later = pd.concat([later, later.sample(frac=0.05, random_state=1).assign(promo=1)])
    later = later.sample(frac=1.0, random_state=2, ignore_index=True)
    history = history[history[columns.STORE_ID] % 7 != 6]  # state 6 has no history

    carry = CalendarCarry.of(state_flags(history, profile), history)
    carried = carry.calendar_after(state_flags(later, profile), later)
    whole = Calendar.of(pd.concat([history, later], ignore_index=True), profile)

    assert carried is not None
    keys = later[[columns.STORE_ID, columns.SALES_DATE]].merge(profile, on=columns.STORE_ID)
    for name, key in (("store_days", columns.STORE_ID), ("state_days", columns.STATE)):
        at_later = [
            keys.merge(getattr(calendar, name), on=[key, columns.SALES_DATE], how="left")
            for calendar in (carried, whole)
        ]
        pd.testing.assert_frame_equal(at_later[0], at_later[1])
    # A later row on a day of its store's history cannot be built from the carry.
    assert carry.calendar_after(state_flags(history.tail(1), profile), history.tail(1)) is None


def test_a_forecast_for_some_stores_sees_the_holidays_of_every_store_of_their_state(
    stores: pd.DataFrame,
) -> None:
    # Store 1 alone reports a state holiday and a school-holiday run reaching into the future
    # days; store 3 (same state) is forecast alone. Its features must be those of the calendar
    # of the whole context and the request, which serving no longer rebuilds per request.
    history = synthetic_sales(days=200)
    last = history[columns.SALES_DATE].max()
    store_1 = history[columns.STORE_ID] == 1
    days_before = (last - history[columns.SALES_DATE]).dt.days
    history.loc[store_1 & (days_before == 20), columns.STATE_HOLIDAY] = "a"
    history.loc[store_1 & (days_before < 6), columns.SCHOOL_HOLIDAY] = 1
    model = GlobalGBMForecaster(SMALL_GBM).fit(history, stores)
    dates = pd.date_range(last + pd.Timedelta(days=1), periods=14, freq="D")
    future = pd.DataFrame(
        {
            columns.STORE_ID: 3,
            columns.PRODUCT_ID: columns.DEFAULT_PRODUCT,
            columns.SALES_DATE: dates,
            columns.OPEN: (dates.dayofweek != 6).astype("int8"),
            columns.PROMO: np.int8(0),
            columns.STATE_HOLIDAY: "0",
            columns.SCHOOL_HOLIDAY: np.int8(0),
        }
    )
    assert model.profile_ is not None
    assert model.stats_ is not None
    assert model.context_ is not None
    whole = Calendar.of(pd.concat([model.context_, future], ignore_index=True), model.profile_)
    expected = build_features(future, model.profile_, model.stats_, whole)

    for _ in range(2):  # the first builds what later requests reuse
        calendar = model._calendar_of(future)
        features = build_features(future, model.profile_, model.stats_, calendar)
        pd.testing.assert_frame_equal(features, expected)
    assert expected["days_after_state_holiday"].iloc[0] == 21
    assert expected["days_into_school_holiday"].iloc[0] == 0
    assert expected["days_after_school_holiday"].iloc[0] == 1
    model.predict(as_future(future))
    # What serving cached is no part of the saved model.
    assert "_context_days" in vars(model)
    assert "_context_days" not in vars(pickle.loads(pickle.dumps(model)))


def test_a_blend_of_seeds_forecasts_the_mean_of_its_members_on_the_log_scale(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    seen, later = split(sales, 28)
    future = as_future(later)
    blend = GlobalGBMForecaster(replace(SMALL_GBM, members=2, member_excluded_features=())).fit(
        seen, stores
    )
    alone = [
        GlobalGBMForecaster(replace(SMALL_GBM, seed=SMALL_GBM.seed + member))
        .fit(seen, stores)
        ._predict_point(future)
        for member in range(2)
    ]

    assert len(blend.member_boosters_) == 1
    assert not np.allclose(alone[0], alone[1])  # the seeds draw other days and features
    np.testing.assert_allclose(
        np.log1p(blend._predict_point(future)), np.mean(np.log1p(alone), axis=0), rtol=1e-6
    )
    # A model saved before blends existed (no member boosters) forecasts with its one booster;
    # one saved before members had features of their own gives them the first's.
    older = copy.copy(blend)
    del older.member_boosters_, older.member_features_
    np.testing.assert_allclose(older._predict_point(future), alone[0], rtol=1e-6)
    older = copy.copy(blend)
    del older.member_features_
    np.testing.assert_allclose(older._predict_point(future), blend._predict_point(future))


def test_members_after_the_first_leave_out_their_excluded_features_and_rounds(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    seen, later = split(sales, 28)
    params = replace(
        SMALL_GBM,
        members=2,
        member_excluded_features=("day_of_year", "week_of"),
        member_rounds=40,
        member_learning_rate=0.25,
    )
    blend = GlobalGBMForecaster(params).fit(seen, stores)
    member = blend.member_boosters_[0].feature_name()

    assert {"day_of_year", "week_of_year"} <= set(blend.features_)
    assert {"day_of_year", "week_of_year"}.isdisjoint(member)
    assert blend.member_features_ == [member]
    assert len(member) == len(blend.features_) - 2
    # The first booster keeps the model's rounds and rate; the second has its own.
    assert blend.booster_ is not None
    assert blend.booster_.current_iteration() == SMALL_GBM.rounds
    assert blend.booster_.params["learning_rate"] == SMALL_GBM.learning_rate
    assert blend.member_boosters_[0].current_iteration() == 40
    assert blend.member_boosters_[0].params["learning_rate"] == 0.25
    forecast = blend.predict(as_future(later))[columns.YHAT].to_numpy()
    assert (forecast[later[columns.OPEN].to_numpy() == 1] > 0).all()


def test_backtest_windows_fit_the_first_member_of_a_blend_alone(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    # The blend is the served model's; a backtest's errors are the first member's.
    windows = backtest_windows(sales[columns.SALES_DATE].max(), windows=2, horizon_days=28)
    fitted: list[GlobalGBMForecaster] = []
    run_backtest(
        sales,
        stores,
        {"gbm": partial(GlobalGBMForecaster, replace(SMALL_GBM, members=2))},
        windows,
        on_fitted=lambda _name, _window, model: fitted.append(model),
    )

    assert len(fitted) == 2
    assert all(model.params == replace(SMALL_GBM, members=1) for model in fitted)
    assert all(model.booster_ is not None and not model.member_boosters_ for model in fitted)
    single = GlobalGBMForecaster(SMALL_GBM)
    assert single.backtest_stand_in() is single
    # A cheaper stand-in where the settings ask for one: its own rounds, rate and leaves.
    cheaper = GlobalGBMForecaster(
        replace(
            SMALL_GBM,
            members=2,
            backtest_rounds=60,
            backtest_learning_rate=0.2,
            backtest_num_leaves=7,
        )
    )
    assert cheaper.backtest_stand_in().params == replace(
        cheaper.params, members=1, rounds=60, learning_rate=0.2, num_leaves=7
    )
    # Reports name what they scored: the stand-in, and the model served in its place.
    assert single.stand_in_description() is None
    assert cheaper.stand_in_description() == (
        f"one booster of 60 rounds at learning rate 0.2, 7 leaves, in place of the served "
        f"blend of 2 boosters of {SMALL_GBM.num_leaves} leaves ({SMALL_GBM.rounds} rounds at "
        f"learning rate {SMALL_GBM.learning_rate:g}; then {SMALL_GBM.rounds} rounds at "
        f"{SMALL_GBM.learning_rate:g})"
    )


def test_the_backtest_booster_grows_its_own_leaves_and_the_served_blend_the_models(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    # The default serves boosters of 95 leaves and backtests one of 63: larger trees cost a
    # training job one fit's extra time, not one per backtest window.
    params = replace(SMALL_GBM, members=2, num_leaves=31, backtest_num_leaves=7)
    served = GlobalGBMForecaster(params).fit(sales, stores)
    stand_in = GlobalGBMForecaster(params).backtest_stand_in().fit(sales, stores)

    assert served.booster_ is not None
    assert stand_in.booster_ is not None
    boosters = [served.booster_, *served.member_boosters_]
    assert [booster.params["num_leaves"] for booster in boosters] == [31, 31]
    assert stand_in.booster_.params["num_leaves"] == 7
    assert not stand_in.member_boosters_
    # The leaves the trees grew, not only the setting: some tree of each reaches its limit.
    assert max(_leaves_per_tree(stand_in.booster_)) == 7
    assert max(_leaves_per_tree(served.booster_)) > 7
    default = GlobalGBMForecaster()
    assert default.backtest_stand_in().params.num_leaves < default.params.num_leaves


def _leaves_per_tree(booster: lgb.Booster) -> list[int]:
    return [tree["num_leaves"] for tree in booster.dump_model()["tree_info"]]


def test_a_gbm_with_the_store_as_a_category_splits_on_sets_of_stores(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    as_number = GlobalGBMForecaster(replace(SMALL_GBM, members=2)).fit(sales, stores)
    as_category = GlobalGBMForecaster(replace(SMALL_GBM, members=2, store_as_category=True)).fit(
        sales, stores
    )

    assert {kind for kind, _ in _store_splits(as_number)} == {"<="}  # ranges of ids
    splits = _store_splits(as_category)
    assert {kind for kind, _ in splits} == {"=="}  # sets of stores, in every booster
    # Sets a range cannot be: stores whose ids are not neighbours on one side of a split.
    assert any(_gaps(stores_on_one_side) for _, stores_on_one_side in splits)
    assert as_category.booster_ is not None
    assert as_category.booster_.params["cat_smooth"] == SMALL_GBM.category_smoothing
    later = as_future(split(sales, 28)[1])
    assert np.isfinite(as_category.predict(later)[columns.YHAT]).all()


def _store_splits(model: GlobalGBMForecaster) -> list[tuple[str, str]]:
    """(decision type, threshold) of every split on the store id, in every booster."""
    found: list[tuple[str, str]] = []
    boosters = [model.booster_, *model.member_boosters_]
    assert len(boosters) == 2
    for booster in boosters:
        assert booster is not None
        dump = booster.dump_model()
        store = dump["feature_names"].index(columns.STORE_ID)
        nodes = [tree["tree_structure"] for tree in dump["tree_info"]]
        while nodes:
            node = nodes.pop()
            if "split_feature" in node:
                if node["split_feature"] == store:
                    found.append((node["decision_type"], str(node["threshold"])))
                nodes += [node["left_child"], node["right_child"]]
    assert found, "no split on the store id"
    return found


def _gaps(categories: str) -> bool:
    ids = sorted(int(value) for value in categories.split("||"))
    return ids != list(range(ids[0], ids[-1] + 1))


@pytest.mark.parametrize(
    ("shard_series", "shards"),
    [
        (9, [[1, 2, 3]]),  # every series fits: one model, as before
        (5, [[1, 2], [3]]),
        (3, [[1], [2], [3]]),
        (2, [[1], [2], [3]]),  # a store with more products than a shard: a shard of its own
    ],
)
def test_store_shards_keep_stores_whole(shard_series: int, shards: list[list[int]]) -> None:
    history = pd.DataFrame(
        {
            columns.STORE_ID: [1, 1, 1, 2, 2, 3, 3, 3, 3, 1],
            columns.PRODUCT_ID: ["a", "b", "c", "a", "b", "a", "b", "c", "d", "a"],
        }
    )

    assert store_shards(history, shard_series) == shards


def test_gbm_params_pass_the_bagging_frequency_to_lightgbm() -> None:
    assert GBMParams().lightgbm()["bagging_freq"] == 1  # a new bag every round
    assert GBMParams(bagging_freq=5).lightgbm()["bagging_freq"] == 5


def test_shard_rows_are_each_shards_rows_in_history_order() -> None:
    history = pd.DataFrame({columns.STORE_ID: [3, 1, 2, 3, 9, 1, 2, 2]})
    shards = [[1, 2], [3]]  # store 9 in no shard: its row is in none

    rows = shard_rows(history, shards)

    assert [list(positions) for positions in rows] == [[1, 2, 5, 6, 7], [0, 3]]
    for store_ids, positions in zip(shards, rows, strict=True):
        pd.testing.assert_frame_equal(
            history.take(positions).reset_index(drop=True),
            history[history[columns.STORE_ID].isin(store_ids)].reset_index(drop=True),
        )


def test_a_sharded_gbm_forecasts_each_store_with_its_shards_model(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    seen, later = split(sales, 28)
    future = as_future(later)
    sharded = GlobalGBMForecaster(replace(SMALL_GBM, shard_series=3)).fit(seen, stores)
    first_three = seen[columns.STORE_ID] <= 3
    alone = GlobalGBMForecaster(SMALL_GBM)._fit_point(
        seen[first_three].reset_index(drop=True), stores[stores[columns.STORE_ID] <= 3]
    )

    assert sharded.shards_ is not None
    assert len(sharded.shards_) == 2
    assert sharded.booster_ is None
    points = sharded._predict_point(future)
    mine = (future[columns.STORE_ID] <= 3).to_numpy()
    np.testing.assert_allclose(
        points[mine], alone._predict_point(future[mine].reset_index(drop=True))
    )
    forecast = pickle.loads(pickle.dumps(sharded)).predict(future)
    assert metrics.rmspe(later[columns.SALES].to_numpy(), forecast[columns.YHAT].to_numpy()) < 0.06
    assert sharded.feature_importance().sum() > 0


def test_a_request_across_gbm_shards_forecasts_as_each_shard_would_alone(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    # Stores 1-3 one product each, 4-6 two: four shards, the first keyed by store id and the
    # others by series code, whose state codes mean other states (HE is 1 in the first
    # shard, 0 in the last). Schedules of school holidays per state lift sales, so the trees
    # read the states' holiday calendars.
    history = pd.concat(
        [
            sales,
            sales[sales[columns.STORE_ID] >= 4].assign(
                **{columns.PRODUCT_ID: "P2", columns.SALES: sales[columns.SALES] * 0.3}
            ),
        ],
        ignore_index=True,
    )
    state = history[columns.STORE_ID].map(
        dict(zip(stores[columns.STORE_ID], stores[columns.STATE], strict=True))
    )
    week = history[columns.SALES_DATE].dt.isocalendar().week.to_numpy()
    school = ((state == "HE") & (week % 9 < 2)) | ((state == "BY") & (week % 7 == 3))
    history[columns.SCHOOL_HOLIDAY] = school.astype("int8")
    history[columns.SALES] = history[columns.SALES] * np.where(school, 1.3, 1.0)
    seen, later = split(history, 28)
    model = GlobalGBMForecaster(replace(SMALL_GBM, shard_series=3), calibration_days=0)
    model.fit(seen, stores)
    assert model.shards_ is not None
    assert [shard.series_codes_ is None for shard in model.shards_] == [True, False, False, False]
    # Rows in any order; a school holiday for store 1 (HE) alone, and a closure: store 6 (HE
    # too, another shard) must not see store 1's holidays.
    future = as_future(later).sample(frac=1.0, random_state=5).reset_index(drop=True)
    days = future[columns.SALES_DATE] - future[columns.SALES_DATE].min()
    first = (future[columns.STORE_ID] == 1) & days.between(
        pd.Timedelta(days=3), pd.Timedelta(days=9)
    )
    future.loc[first, columns.SCHOOL_HOLIDAY] = 1
    future.loc[(future[columns.STORE_ID] == 5) & (days == pd.Timedelta(days=4)), columns.OPEN] = 0

    across = model._predict_point(future)

    assert vars(model)["_shard_tables"] is not None  # one pass over every shard's rows
    alone = np.empty(len(future))
    for number, shard in enumerate(model.shards_):
        rows = np.flatnonzero(
            future[columns.STORE_ID].map(model.shard_of_store_).to_numpy() == number
        )
        alone[rows] = shard._predict_point(future.iloc[rows].reset_index(drop=True))
    np.testing.assert_array_equal(across, alone)
    # `predict` leaves closed days out of the features and trees (they forecast 0), not out
    # of the calendar.
    is_open = future[columns.OPEN].to_numpy() == 1
    assert not is_open.all()
    np.testing.assert_array_equal(
        model._predict_point(future, open_days_only=True), np.where(is_open, across, 0.0)
    )
    # One series alone forecasts as within the whole request.
    one = (future[columns.STORE_ID] == 6) & (future[columns.PRODUCT_ID] == "P2")
    np.testing.assert_array_equal(
        model._predict_point(future[one].reset_index(drop=True)), across[one.to_numpy()]
    )
    assert "_shard_tables" not in vars(pickle.loads(pickle.dumps(model)))


def test_a_large_request_predicts_gbm_shards_side_by_side_as_each_shard_alone(
    sales: pd.DataFrame, stores: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Six shards of one store, each a blend of two boosters on different features; a
    # request of more than a thousand rows in shuffled order spreads them over three lanes
    # (more than this machine may have CPUs) of two shards, so each lane's rows, each
    # shard's block of them and each member's features must land where they belong.
    params = replace(
        SMALL_GBM, shard_series=1, members=2, member_excluded_features=("day_of_year",)
    )
    seen, later = split(sales, 180)
    model = GlobalGBMForecaster(params, calibration_days=0).fit(seen, stores)
    assert model.shards_ is not None
    assert len(model.shards_) == 6
    future = as_future(later).sample(frac=1.0, random_state=7).reset_index(drop=True)
    assert len(future) >= gbm._ONE_THREAD_ROWS
    # The lanes handed to the pool (the calling thread runs the first lane itself). Counted
    # at submission: which pool thread runs a lane is the pool's choice (an idle thread is
    # reused), so thread ids would not tell the lanes apart.
    submitted: list[int] = []

    class RecordingPool(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            submitted.append(len(args[0]))
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(gbm, "_cpus", lambda: 3)
    monkeypatch.setattr(gbm, "ThreadPoolExecutor", RecordingPool)

    across = model._predict_point(future)

    assert submitted == [2, 2]
    monkeypatch.undo()
    shard_of_row = future[columns.STORE_ID].map(model.shard_of_store_).to_numpy()
    alone = np.empty(len(future))
    for number, shard in enumerate(model.shards_):
        rows = np.flatnonzero(shard_of_row == number)
        alone[rows] = shard._predict_point(future.iloc[rows].reset_index(drop=True))
    np.testing.assert_array_equal(across, alone)


def test_gbm_shards_fitted_as_executor_tasks_forecast_as_those_fitted_in_turn(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    seen, later = split(sales, 28)
    future = as_future(later)
    # In turn with 2 threads each; as tasks of 2 workers with each worker's share of the
    # CPUs: the same models (LightGBM's column-wise histograms do not depend on threads).
    params = replace(SMALL_GBM, shard_series=2, threads=2)
    in_turn = GlobalGBMForecaster(params)
    pool = ProcessPoolTaskExecutor(2)
    tasks = GlobalGBMForecaster(params, executor=pool)

    assert not in_turn.fans_out_on(seen)  # no executor: fitted where it is called
    assert tasks.fans_out_on(seen)
    assert not GlobalGBMForecaster(SMALL_GBM, executor=SequentialExecutor()).fans_out_on(seen)
    in_turn.fit(seen, stores)
    tasks.fit(seen, stores)
    assert tasks.shards_ is not None
    assert len(tasks.shards_) == 3
    assert {shard.params.threads for shard in tasks.shards_} == {min(2, pool.cpus_per_task)}
    pd.testing.assert_frame_equal(tasks.predict(future), in_turn.predict(future))
    assert pickle.loads(pickle.dumps(tasks)).executor is None


def test_prophet_on_a_few_months_of_history_forecasts_the_level_not_a_yearly_cycle() -> None:
    # 90 days cannot identify a yearly cycle: fitted anyway, it took this series to RMSPE 0.87
    # (and 90 days of a real store to forecasts of 1e22).
    history, later = split(synthetic_sales(stores=1, days=90, noise=0.05), 28)
    model = ProphetForecaster(calibration_days=0).fit(history, synthetic_stores(1))
    forecast = model.predict(as_future(later))
    assert metrics.rmspe(later[columns.SALES].to_numpy(), forecast[columns.YHAT].to_numpy()) < 0.1
    assert forecast[columns.YHAT].max() <= history[columns.SALES].max()


@pytest.mark.parametrize("model", ["gbm", "seasonal_naive"])
def test_closed_days_forecast_zero(
    model: str, sales: pd.DataFrame, stores: pd.DataFrame, fitted_gbm: GlobalGBMForecaster
) -> None:
    seen, later = split(sales, 28)
    future = as_future(later)
    future.loc[future.index % 5 == 0, columns.OPEN] = 0  # closures on days that would sell
    forecaster = fitted_gbm if model == "gbm" else SeasonalNaiveForecaster().fit(seen, stores)
    forecast = forecaster.predict(future)
    closed = future[columns.OPEN].to_numpy() == 0
    for column in columns.FORECAST_VALUES:
        assert (forecast.loc[closed, column] == 0).all(), column
        assert (forecast.loc[~closed, column] > 0).all(), column
    if model == "gbm":  # it does not predict closed days; open days forecast as with them
        np.testing.assert_array_equal(
            forecaster._predict_open_days(future),
            np.where(closed, 0.0, forecaster._predict_point(future)),
        )
    assert list(forecast.columns) == list(columns.FORECAST_COLUMNS)


def test_intervals_widen_with_horizon() -> None:
    # A random-walk level: the further ahead, the larger the naive forecast's errors.
    history = synthetic_sales(stores=6, days=500, noise=0.02, walk=0.02, seed=11)
    seen, later = split(history, 48)
    forecaster = SeasonalNaiveForecaster(weeks=4).fit(seen, synthetic_stores())
    forecast = forecaster.predict(as_future(later))
    forecast[columns.HORIZON_DAYS] = (
        forecast[columns.SALES_DATE] - seen[columns.SALES_DATE].max()
    ).dt.days
    sold = forecast[forecast[columns.YHAT] > 0]
    width = (
        ((sold[columns.YHAT_UPPER] - sold[columns.YHAT_LOWER]) / sold[columns.YHAT])
        .groupby(sold[columns.HORIZON_DAYS])
        .mean()
    )
    assert (np.diff(width.to_numpy()) >= -1e-9).all()  # never narrower later (up to rounding)
    assert width.iloc[-7:].mean() > 1.5 * width.iloc[:7].mean()
    wide = (sold[columns.YHAT_UPPER_95] - sold[columns.YHAT_LOWER_95]) / sold[columns.YHAT]
    assert (wide.to_numpy() >= width.reindex(sold[columns.HORIZON_DAYS]).to_numpy() - 1e-9).all()


def test_features_use_only_days_up_to_the_cutoff(sales: pd.DataFrame, stores: pd.DataFrame) -> None:
    seen, later = split(sales, 28)
    profile = store_profile(stores)
    stats = StoreStats.of(seen)
    rows = pd.concat([seen, later])
    features = build_features(seen, profile, stats, Calendar.of(rows, profile))
    # Wildly different sales after the cutoff change nothing the model learns from.
    tampered = later.assign(**{columns.SALES: later[columns.SALES] * 50})
    rows_tampered = pd.concat([seen, tampered])
    again = build_features(seen, profile, StoreStats.of(seen), Calendar.of(rows_tampered, profile))
    pd.testing.assert_frame_equal(features, again)
    assert stats.cutoff == seen[columns.SALES_DATE].max()
    # ... while the statistics do move when those days are part of the history.
    assert not StoreStats.of(pd.concat([seen, tampered])).by_store.equals(stats.by_store)


def test_features_carry_each_rows_store_weekday_and_calendar_day(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    seen, later = split(sales, 28)
    profile = store_profile(stores)
    # Statistics without store 2: its rows get missing statistics, as a left join gives.
    stats = StoreStats.of(seen[seen[columns.STORE_ID] != 2])
    calendar = Calendar.of(pd.concat([seen, later]), profile)
    rows = later.sample(frac=1.0, random_state=5)  # any row order, any index
    features = build_features(rows, profile, stats, calendar)

    assert features.index.equals(rows.index)
    by_store = stats.by_store.set_index(columns.STORE_ID)
    by_weekday = stats.by_weekday.set_index([columns.STORE_ID, columns.DAY_OF_WEEK])
    store_days = calendar.store_days.set_index([columns.STORE_ID, columns.SALES_DATE])
    for position in range(0, len(rows), 37):
        row = rows.iloc[position]
        store, day = int(row[columns.STORE_ID]), row[columns.SALES_DATE]
        got = features.iloc[position]
        assert got[columns.STORE_ID] == store
        assert got[columns.STATE] == profile.set_index(columns.STORE_ID).loc[store, columns.STATE]
        assert (
            got["days_after_promo_start"] == store_days.loc[(store, day), "days_after_promo_start"]
        )
        if store == 2:
            assert np.isnan(got["store_mean_log"])
            assert np.isnan(got["store_weekday_effect"])
        else:
            assert got["store_mean_log"] == by_store.loc[store, "store_mean_log"]
            weekday = day.dayofweek + 1
            if (store, weekday) in by_weekday.index:
                assert got["store_weekday_effect"] == by_weekday.loc[(store, weekday)].iloc[0]
            else:  # closed on Sundays: no effect learnt
                assert weekday == 7
                assert np.isnan(got["store_weekday_effect"])


def test_features_place_a_day_in_its_school_holidays_and_promotion_cycle(
    stores: pd.DataFrame,
) -> None:
    sales = synthetic_sales(stores=2, days=70)
    first = sales[columns.SALES_DATE].min()
    holidays = (sales[columns.SALES_DATE] >= first + pd.Timedelta(days=21)) & (
        sales[columns.SALES_DATE] < first + pd.Timedelta(days=35)
    )
    sales[columns.SCHOOL_HOLIDAY] = holidays.astype(int)
    profile = store_profile(stores)
    features = build_features(sales, profile, StoreStats.of(sales), Calendar.of(sales, profile))
    store = features[columns.STORE_ID] == 1
    into = features.loc[store, "days_into_school_holiday"].to_numpy()
    left = features.loc[store, "days_left_school_holiday"].to_numpy()
    assert list(into[21:35]) == list(range(1, 15))
    assert list(left[21:35]) == list(range(14, 0, -1))
    assert into[:21].max() == 0
    assert into[35:].max() == 0
    # Promotions run Monday to Friday every other week: a promo Wednesday is two days after
    # its run started, the Monday after a promo week three days after it ended.
    promo = sales.loc[store, columns.PROMO].to_numpy() == 1
    weekday = sales.loc[store, columns.SALES_DATE].dt.dayofweek.to_numpy()
    after_start = features.loc[store, "days_after_promo_start"].to_numpy()
    after_end = features.loc[store, "days_after_promo_end"].to_numpy()
    assert (after_start[promo & (weekday == 2)] == 2).all()
    monday_after = np.flatnonzero(~promo & (weekday == 0) & np.roll(promo, 3))
    assert len(monday_after) > 0
    assert (after_end[monday_after] == 3).all()


def test_a_backtest_never_shows_a_model_its_window(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    windows = backtest_windows(sales[columns.SALES_DATE].max(), windows=2, horizon_days=28)
    models = {
        "seasonal_naive": SeasonalNaiveForecaster,
        "gbm": partial(GlobalGBMForecaster, SMALL_GBM),
    }
    honest = run_backtest(sales, stores, models, windows)
    last = windows[-1]
    inside = (sales[columns.SALES_DATE] >= last.start) & (sales[columns.SALES_DATE] <= last.end)
    tampered = sales.assign(
        **{columns.SALES: np.where(inside, sales[columns.SALES] * 3, sales[columns.SALES])}
    )
    again = run_backtest(tampered, stores, models, windows)
    for column in columns.FORECAST_VALUES:
        np.testing.assert_allclose(again[column], honest[column])
    assert not np.allclose(again[metrics.ACTUAL], honest[metrics.ACTUAL])


def test_a_series_launched_after_a_windows_cutoff_is_forecast_from_the_next_window_on(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    windows = backtest_windows(sales[columns.SALES_DATE].max(), windows=3, horizon_days=28)
    launch = windows[0].cutoff + pd.Timedelta(days=10)  # within window 1
    launched = sales[(sales[columns.STORE_ID] == 2) & (sales[columns.SALES_DATE] >= launch)].assign(
        **{columns.PRODUCT_ID: "P002"}
    )
    history = pd.concat([sales, launched], ignore_index=True)
    models = {
        "seasonal_naive": SeasonalNaiveForecaster,
        "gbm": partial(GlobalGBMForecaster, SMALL_GBM),
    }
    scored = run_backtest(history, stores, models, windows)
    new = scored[columns.PRODUCT_ID] == "P002"
    assert set(scored.loc[new, columns.BACKTEST_WINDOW]) == {2, 3}
    # Every other series is forecast on every day of every window.
    per_window = scored[~new].groupby([columns.MODEL, columns.BACKTEST_WINDOW]).size()
    assert (per_window == len(stores) * 28).all()


def naive_recording(
    given: list[IntervalCalibration | None],
) -> Callable[..., SeasonalNaiveForecaster]:
    """A seasonal-naive factory that appends the calibration it makes each model with."""

    def naive(*, calibration: IntervalCalibration | None = None) -> SeasonalNaiveForecaster:
        given.append(calibration)
        return SeasonalNaiveForecaster(calibration=calibration)

    return naive


def test_later_backtest_windows_are_calibrated_on_the_window_before(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    windows = backtest_windows(sales[columns.SALES_DATE].max(), windows=3, horizon_days=28)
    given: list[IntervalCalibration | None] = []
    scored = run_backtest(sales, stores, {"seasonal_naive": naive_recording(given)}, windows)
    # The first window probes for its own calibration; each later one takes the errors of
    # the window just before it, which lie before its cutoff.
    assert given[0] is None
    for number, calibration in zip((1, 2), given[1:], strict=True):
        expected = calibration_of(scored[scored[columns.BACKTEST_WINDOW] == number])
        assert calibration is not None
        assert calibration.scale == pytest.approx(expected.scale)
        for column, values in expected.quantiles.items():
            np.testing.assert_allclose(calibration.quantiles[column], values)
    later = scored[(scored[columns.BACKTEST_WINDOW] > 1) & (scored[columns.OPEN] == 1)]
    assert (later[columns.YHAT_LOWER] < later[columns.YHAT_UPPER]).all()


def test_backtest_windows_end_at_the_data_end() -> None:
    windows = backtest_windows(pd.Timestamp("2015-06-13"), windows=3)
    assert [w.number for w in windows] == [1, 2, 3]
    assert windows[-1].end == pd.Timestamp("2015-06-13")
    assert windows[-1].start == pd.Timestamp("2015-04-27")
    assert all((w.end - w.start).days + 1 == 48 for w in windows)
    assert windows[0].end + pd.Timedelta(days=1) == windows[1].start


def test_season_windows_forecast_the_next_forecast_days_a_year_earlier() -> None:
    windows = backtest_windows(
        pd.Timestamp("2015-06-13"),
        windows=3,
        season_windows=2,
        first_date=pd.Timestamp("2013-01-01"),
    )
    assert [w.number for w in windows] == [1, 2, 3, 4, 5]
    season, check = windows[0], windows[1]
    assert (season.kind, season.cutoff, season.start, season.end) == (
        SEASON,
        pd.Timestamp("2014-06-13"),
        pd.Timestamp("2014-06-14"),
        pd.Timestamp("2014-07-31"),
    )
    assert (check.kind, check.cutoff, check.end) == (
        SEASON,
        pd.Timestamp("2014-07-31"),
        pd.Timestamp("2014-09-17"),
    )
    assert [w.kind for w in windows[2:]] == [ROLLING] * 3
    assert windows[-1].end == pd.Timestamp("2015-06-13")
    # Too little history before it: no season window.
    short = backtest_windows(
        pd.Timestamp("2015-06-13"), season_windows=1, first_date=pd.Timestamp("2014-05-01")
    )
    assert [w.kind for w in short] == [ROLLING] * 3


def test_the_backtest_reports_season_windows(stores: pd.DataFrame) -> None:
    report = model_selection.backtest(
        synthetic_sales(days=480),
        stores,
        ["seasonal_naive"],
        windows=2,
        season_windows=1,
        horizon_days=28,
    )
    kinds = [w.kind for w in report.windows]
    assert kinds == [SEASON, ROLLING, ROLLING]
    season = report.summary[report.summary[WINDOW_KIND] == SEASON]
    assert len(season) == 1
    assert season[metrics.RMSPE].notna().all()
    assert season[metrics.COVERAGE_80].notna().all()
    assert report.reported_window == 3


def test_a_season_window_is_calibrated_on_the_rolling_windows_without_a_probe(
    stores: pd.DataFrame,
) -> None:
    sales = synthetic_sales(days=480)
    windows = backtest_windows(
        sales[columns.SALES_DATE].max(),
        windows=2,
        horizon_days=28,
        season_windows=1,
        first_date=sales[columns.SALES_DATE].min(),
    )
    assert [w.kind for w in windows] == [SEASON, ROLLING, ROLLING]
    given: list[IntervalCalibration | None] = []
    scored = run_backtest(sales, stores, {"seasonal_naive": naive_recording(given)}, windows)
    # The season window's model is handed a calibration, so it fits no probe; the first
    # rolling window (nothing just before it) probes for its own.
    assert given[0] is UNCALIBRATED
    assert given[1] is None
    expected = calibration_of(scored[scored[columns.BACKTEST_WINDOW].isin([2, 3])])
    season = scored[scored[columns.BACKTEST_WINDOW] == 1]
    assert (season[POINT_SCALE] == expected.scale).all()
    assert expected.scale != 1.0
    alone = SeasonalNaiveForecaster(calibration=expected).fit(
        sales[sales[columns.SALES_DATE] <= windows[0].cutoff], stores
    )
    target = sales[
        (sales[columns.SALES_DATE] >= windows[0].start)
        & (sales[columns.SALES_DATE] <= windows[0].end)
    ]
    served = alone.predict(as_future(target))
    for column in columns.FORECAST_VALUES:
        np.testing.assert_allclose(season[column].to_numpy(), served[column].to_numpy())
    open_days = season[columns.OPEN] == 1
    assert (season.loc[open_days, columns.YHAT_LOWER] < season.loc[open_days, columns.YHAT]).all()


def test_a_window_fitted_on_too_little_history_to_calibrate_reports_no_coverage(
    stores: pd.DataFrame,
) -> None:
    # 90 days, one 48-day window: its models see 42 days, too few to calibrate intervals on
    # (as the dashboard's test champion). Collapsed onto the point forecast, they held no
    # day's sales: that is no interval, not a coverage of 0 %.
    short = synthetic_sales(days=90)
    bundle, report = model_selection.train(short, stores, ["seasonal_naive"], windows=1)
    reported = report.reported().set_index(columns.MODEL)
    assert reported.loc[CHAMPION, metrics.RMSPE] > 0
    assert reported[[metrics.COVERAGE_80, metrics.COVERAGE_95]].isna().all().all()
    champion = next(
        row for row in bundle.metadata["reported_metrics"] if row[columns.MODEL] == CHAMPION
    )
    assert np.isnan(champion[metrics.COVERAGE_80])
    # The final model is calibrated on that window's errors: it serves real intervals.
    days = future_days(bundle.series, bundle.last_date + pd.Timedelta(days=1), 14)
    served = bundle.predict(days).frame
    open_days = served[columns.YHAT] > 0
    assert open_days.any()
    assert (
        served.loc[open_days, columns.YHAT_LOWER] < served.loc[open_days, columns.YHAT_UPPER]
    ).all()

    # A later window, calibrated on the one before it, has its coverage.
    two = model_selection.backtest(
        synthetic_sales(days=110), stores, ["seasonal_naive"], windows=2, horizon_days=28
    )
    coverage = two.summary[two.summary[columns.MODEL] == "seasonal_naive"].set_index(
        columns.BACKTEST_WINDOW
    )[metrics.COVERAGE_80]
    assert np.isnan(coverage[1])
    assert 0.0 < coverage[2] <= 1.0


def test_metrics_on_known_values() -> None:
    scored = pd.DataFrame(
        {
            columns.YHAT: [110.0, 90.0, 50.0, 0.0],
            columns.YHAT_LOWER: [100.0, 95.0, 40.0, 0.0],
            columns.YHAT_UPPER: [120.0, 99.0, 60.0, 0.0],
            columns.YHAT_LOWER_95: [90.0, 80.0, 30.0, 0.0],
            columns.YHAT_UPPER_95: [130.0, 110.0, 70.0, 0.0],
            metrics.ACTUAL: [100.0, 100.0, 50.0, 0.0],  # the last day had no sales: not scored
        }
    )
    result = metrics.accuracy(scored)
    assert result[metrics.RMSPE] == pytest.approx(np.sqrt((0.01 + 0.01 + 0) / 3))
    assert result[metrics.MAPE] == pytest.approx(0.2 / 3)
    assert result[metrics.MAE] == pytest.approx(20 / 3)
    assert result[metrics.BIAS] == pytest.approx(0.0)
    assert result[metrics.COVERAGE_80] == pytest.approx(2 / 3)
    assert result[metrics.COVERAGE_95] == pytest.approx(1.0)
    assert result[metrics.DAYS] == 3
    # A day without an interval is neither inside nor outside one.
    without = scored.assign(**{columns.YHAT_LOWER: [100.0, np.nan, np.nan, np.nan]})
    assert metrics.accuracy(without)[metrics.COVERAGE_80] == pytest.approx(1.0)
    none = scored.assign(**{columns.YHAT_LOWER: np.nan, columns.YHAT_UPPER: np.nan})
    assert np.isnan(metrics.accuracy(none)[metrics.COVERAGE_80])
    assert metrics.accuracy(none)[metrics.RMSPE] == pytest.approx(result[metrics.RMSPE])


def test_metrics_per_group_match_each_group_alone() -> None:
    rng = np.random.default_rng(5)
    actual = rng.gamma(5.0, 1000.0, 600)
    actual[rng.random(600) < 0.2] = 0.0
    actual[:6] = 0.0  # store 0 had no sales at all
    yhat = actual * rng.lognormal(0.0, 0.1, 600) + 1.0
    scored = pd.DataFrame(
        {
            columns.STORE_ID: np.repeat(np.arange(100), 6),
            columns.YHAT: yhat,
            columns.YHAT_LOWER: yhat * 0.9,
            columns.YHAT_UPPER: yhat * 1.1,
            columns.YHAT_LOWER_95: yhat * 0.8,
            columns.YHAT_UPPER_95: yhat * 1.2,
            metrics.ACTUAL: actual,
        }
    )
    scored.loc[scored[columns.STORE_ID] == 7, columns.YHAT] = np.nan  # a missing forecast ...
    by_store = metrics.accuracy_by(scored, [columns.STORE_ID]).set_index(columns.STORE_ID)
    assert by_store.loc[0, metrics.DAYS] == 0
    assert by_store.loc[0, list(metrics.METRICS[:-1])].isna().all()
    assert by_store.loc[7, list(metrics.METRICS[:-1])].isna().all()  # ... spoils its group
    for store in range(1, 100):
        if store == 7:
            continue
        alone = metrics.accuracy(scored[scored[columns.STORE_ID] == store])
        for name in metrics.METRICS:
            assert by_store.loc[store, name] == pytest.approx(alone[name]), (store, name)
    assert by_store[metrics.DAYS].sum() == (actual > 0).sum()


def test_rmspe_per_group_alone_is_accuracy_bys_rmspe_to_the_bit() -> None:
    rng = np.random.default_rng(11)
    rows = 4_000
    actual = rng.gamma(5.0, 1000.0, rows)
    actual[rng.random(rows) < 0.2] = 0.0
    yhat = actual * rng.lognormal(0.0, 0.2, rows) + 1.0
    store_ids = rng.integers(0, 300, rows)
    yhat[store_ids == 7] = np.nan  # missing forecasts spoil their groups
    scored = pd.DataFrame(
        {
            columns.STORE_ID: store_ids,
            columns.PRODUCT_ID: rng.choice(["P001", "P002"], rows),
            columns.MODEL: rng.choice(["gbm", "seasonal_naive"], rows),
            columns.YHAT: yhat,
            **{column: yhat for column in columns.FORECAST_VALUES[1:]},
            metrics.ACTUAL: actual,
        }
    )
    series = [columns.STORE_ID, columns.PRODUCT_ID, columns.MODEL]
    for frame, keys in ((scored, series), (scored[store_ids != 7], [columns.MODEL])):
        full = metrics.accuracy_by(frame, keys)
        alone = metrics.rmspe_by(frame[[*keys, metrics.ACTUAL, columns.YHAT]], keys)
        pd.testing.assert_frame_equal(alone, full[[*keys, metrics.RMSPE]])
        assert full[metrics.RMSPE].notna().sum() > len(full) // 2
    assert metrics.rmspe_by(scored, series)[metrics.RMSPE].isna().any()


def test_champions_are_picked_on_the_selection_windows_only() -> None:
    rows = []
    # Store 1: model a better on windows 1-2; store 2: model b. Window 3 says the opposite.
    for store, good in ((1, "a"), (2, "b")):
        for window in (1, 2, 3):
            for model in ("a", "b"):
                better = (model == good) != (window == 3)
                rows.append(
                    {
                        columns.STORE_ID: store,
                        columns.PRODUCT_ID: columns.DEFAULT_PRODUCT,
                        columns.MODEL: model,
                        columns.BACKTEST_WINDOW: window,
                        columns.YHAT: 101.0 if better else 130.0,
                        metrics.ACTUAL: 100.0,
                        **{col: 100.0 for col in columns.FORECAST_VALUES[1:]},
                    }
                )
    champions = select_champions(pd.DataFrame(rows), [1, 2]).set_index(columns.STORE_ID)
    assert champions.loc[1, columns.MODEL] == "a"
    assert champions.loc[2, columns.MODEL] == "b"
    assert champions.loc[1, metrics.RMSPE] == pytest.approx(0.01)
    # The champions' own rows (`champion_scored`) are no candidate.
    scored = pd.DataFrame(rows)
    labelled = champion_scored(
        scored[scored[columns.BACKTEST_WINDOW] == 3], champions.reset_index()
    )
    again = select_champions(pd.concat([scored, labelled]), [1, 2, 3])
    pd.testing.assert_frame_equal(again, select_champions(scored, [1, 2, 3]))
    assert "rmspe_champion" not in again.columns


def test_a_champion_must_beat_the_best_model_by_a_margin() -> None:
    rows = []
    # Model a is best overall; on store 2, b is better by only 5 %, on store 3 by 50 %.
    errors = {1: {"a": 0.10, "b": 0.40}, 2: {"a": 0.20, "b": 0.19}, 3: {"a": 0.20, "b": 0.10}}
    for store, by_model in errors.items():
        for model, error in by_model.items():
            rows.append(
                {
                    columns.STORE_ID: store,
                    columns.PRODUCT_ID: columns.DEFAULT_PRODUCT,
                    columns.MODEL: model,
                    columns.BACKTEST_WINDOW: 1,
                    columns.YHAT: 100.0 * (1 + error),
                    metrics.ACTUAL: 100.0,
                    **{col: 100.0 for col in columns.FORECAST_VALUES[1:]},
                }
            )
    champions = select_champions(pd.DataFrame(rows), [1], margin=0.1).set_index(columns.STORE_ID)
    assert champions[columns.MODEL].to_dict() == {1: "a", 2: "a", 3: "b"}
    assert champions.loc[2, metrics.RMSPE] == pytest.approx(0.20)
    assert select_champions(pd.DataFrame(rows), [1], margin=0.0).loc[1, columns.MODEL] == "b"


def test_a_few_days_with_tiny_actuals_do_not_decide_the_rmspe_scale() -> None:
    rng = np.random.default_rng(0)
    actual = rng.uniform(50, 150, 4000)
    horizon = np.tile(np.arange(1, 41), 100)
    forecast = actual * 1.1
    actual[:4] = 2.0  # one day in a thousand: a reopening, a stocktaking day

    calibration = IntervalCalibration.of_scored(forecast, actual, horizon, rescale=True)

    # Unclipped, the 4 ratios of 25-80 would pull the factor to about 0.3.
    assert calibration.scale == pytest.approx(1 / 1.1, rel=0.03)


def test_interval_calibration_learns_the_rmspe_scale() -> None:
    rng = np.random.default_rng(0)
    actual = rng.uniform(50, 150, 4000)
    horizon = np.tile(np.arange(1, 41), 100)
    calibration = IntervalCalibration.of_scored(actual * 1.1, actual, horizon, rescale=True)
    assert calibration.scale == pytest.approx(1 / 1.1)
    bounds = calibration.bounds(np.array([100.0]), np.array([3]))
    assert bounds[columns.YHAT_LOWER][0] == pytest.approx(100.0)


def test_each_interval_quantile_is_the_median_of_the_windows_own() -> None:
    # Three backtest windows; the first (a Christmas) errs four times as widely as the others.
    rng = np.random.default_rng(1)
    horizon = np.tile(np.arange(1, 29), 300)
    actual = rng.uniform(50, 150, len(horizon))
    spreads = (0.4, 0.1, 0.1)
    forecasts = [actual * np.exp(rng.normal(0, spread, len(actual))) for spread in spreads]
    forecast, actual_all = np.concatenate(forecasts), np.tile(actual, 3)
    horizon_all, windows = np.tile(horizon, 3), np.repeat([1, 2, 3], len(actual))

    by_window = IntervalCalibration.of_scored(
        forecast, actual_all, horizon_all, rescale=True, windows=windows
    )
    pooled = IntervalCalibration.of_scored(forecast, actual_all, horizon_all, rescale=True)

    # The factor is learnt on every day; the widths are the middle window's, not the wide
    # window's tails pooled with the others.
    assert by_window.scale == pooled.scale
    upper = by_window.quantiles[columns.YHAT_UPPER]
    assert (upper < pooled.quantiles[columns.YHAT_UPPER]).all()
    width = upper - by_window.quantiles[columns.YHAT_LOWER]
    assert np.median(width) == pytest.approx(2 * 1.2816 * 0.1, abs=0.03)  # the narrow windows'
    # The median of each window's own quantiles, taken at the common factor.
    middle = [
        IntervalCalibration.of(
            horizon, -np.log(forecast[windows == number] / actual * pooled.scale)
        )
        for number in (1, 2, 3)
    ]
    np.testing.assert_allclose(
        upper, np.median([window.quantiles[columns.YHAT_UPPER] for window in middle], axis=0)
    )
    assert middle[0].quantiles[columns.YHAT_UPPER].min() > upper.max()
    # One window: pooled, as before.
    single = IntervalCalibration.of_scored(
        forecast, actual_all, horizon_all, rescale=True, windows=np.ones(len(windows))
    )
    np.testing.assert_array_equal(
        single.quantiles[columns.YHAT_UPPER], pooled.quantiles[columns.YHAT_UPPER]
    )


def test_windows_of_unequal_length_hold_their_last_quantile_over_the_horizons_they_lack() -> None:
    # Two windows of 28 horizons and one that ends at 26 (the days of a shorter last window).
    rng = np.random.default_rng(2)
    lengths = (28, 28, 26)
    horizon = np.concatenate([np.tile(np.arange(1, n + 1), 200) for n in lengths])
    windows = np.concatenate([np.full(200 * n, number) for number, n in enumerate(lengths)])
    actual = rng.uniform(50, 150, len(horizon))
    forecast = actual * np.exp(rng.normal(0, 0.1, len(actual)))

    calibration = IntervalCalibration.of_scored(
        forecast, actual, horizon, rescale=True, windows=windows
    )

    np.testing.assert_array_equal(calibration.horizons, np.arange(1, 29))
    own = [
        IntervalCalibration.of(
            horizon[windows == number],
            -np.log(forecast[windows == number] / actual[windows == number] * calibration.scale),
        )
        for number in range(3)
    ]
    upper = [window.quantiles[columns.YHAT_UPPER] for window in own]
    short = np.concatenate([upper[2], np.repeat(upper[2][-1], 2)])
    np.testing.assert_allclose(
        calibration.quantiles[columns.YHAT_UPPER], np.median([upper[0], upper[1], short], axis=0)
    )


def test_training_builds_a_bundle_that_round_trips(
    tmp_path: Path, sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    seen, later = split(sales, 21)
    bundle, report = model_selection.train(
        seen,
        stores,
        ["seasonal_naive", "gbm"],
        windows=2,
        horizon_days=28,
        executor=SequentialExecutor(),
    )
    assert set(report.summary[columns.MODEL]) == {"seasonal_naive", "gbm", CHAMPION}
    assert bundle.series == {(s, columns.DEFAULT_PRODUCT) for s in range(1, 7)}
    # The default gbm's backtest windows fit a cheaper stand-in: the report and the bundle
    # say so beside its figures; seasonal_naive is backtested as served.
    assert report.stand_ins == {"gbm": GlobalGBMForecaster().stand_in_description()}
    assert bundle.metadata["backtest_stand_ins"] == report.stand_ins
    assert report.stand_ins["gbm"].startswith("one booster of 170 rounds at learning rate 0.15")
    future = as_future(later)
    first = bundle.predict(future)
    bundle.save(tmp_path / "bundle")
    loaded = ForecastBundle.load(tmp_path / "bundle", signing_key=None)
    second = loaded.predict(future)
    pd.testing.assert_frame_equal(first.frame, second.frame)
    assert first.assumptions == []
    assert sum(first.champions.values()) == 6
    assert (
        metrics.rmspe(later[columns.SALES].to_numpy(), first.frame[columns.YHAT].to_numpy()) < 0.08
    )

    # Without covariates, the saved bundle projects each store's promotion cycle: promo
    # weekdays forecast above the same weekdays without one.
    bare = future_days(loaded.series, loaded.last_date + pd.Timedelta(days=1), 28)
    guessed = loaded.predict(bare)
    assert ASSUMED_PROMO in guessed.assumptions
    days = bare[columns.SALES_DATE]
    promo_week = (days.dt.isocalendar().week.to_numpy() % 2) == 0
    mondays = (days.dt.dayofweek == 0).to_numpy()
    yhat = guessed.frame[columns.YHAT].to_numpy()
    for store in range(1, 7):
        own = (bare[columns.STORE_ID] == store).to_numpy() & mondays
        assert yhat[own & promo_week].min() > 1.15 * yhat[own & ~promo_week].max()

    with pytest.raises(UnknownSeriesError, match="store 99"):
        bundle.predict(future.assign(**{columns.STORE_ID: 99}))
    with pytest.raises(ValueError, match="forecasts start the day after"):
        bundle.predict(as_future(seen.tail(3)))


def test_missing_covariates_are_assumed_and_reported(sales: pd.DataFrame) -> None:
    usual = usual_open_weekdays(sales)
    dates = pd.date_range(sales[columns.SALES_DATE].max() + pd.Timedelta(days=1), periods=7)
    bare = pd.DataFrame({columns.STORE_ID: 1, columns.SALES_DATE: dates})
    completed, assumptions = complete_future(bare, usual)
    assert ASSUMED_OPEN in assumptions
    assert ASSUMED_PROMO in assumptions
    sunday = completed[columns.SALES_DATE].dt.dayofweek == 6
    assert (completed.loc[sunday, columns.OPEN] == 0).all()
    assert (completed.loc[~sunday, columns.OPEN] == 1).all()
    assert (completed[columns.PROMO] == 0).all()
    assert list(completed.columns) == list(columns.FUTURE_COLUMNS)


def test_missing_covariates_come_from_the_promotion_cycle_and_public_holidays(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    # The synthetic stores (in HE, BY, NW) run promotions Monday to Friday of even ISO weeks.
    dates = pd.date_range("2015-03-02", "2015-04-12")  # Good Friday 04-03, Easter Monday 04-06
    bare = pd.DataFrame(
        {
            columns.STORE_ID: np.repeat([1, 2, 4], len(dates)),
            columns.SALES_DATE: np.tile(dates.to_numpy(), 3),
            columns.PROMO: np.nan,
        }
    )
    bare.loc[0, columns.PROMO] = 0  # the caller's value wins over the projection
    completed, assumptions = complete_future(
        bare, usual_open_weekdays(sales), usual_promo_cycle(sales), store_states(stores)
    )
    assert {ASSUMED_OPEN, ASSUMED_PROMO, ASSUMED_STATE_HOLIDAY} <= set(assumptions)
    day = completed[columns.SALES_DATE]
    easter = day.isin([pd.Timestamp("2015-04-03"), pd.Timestamp("2015-04-06")])
    assert (completed.loc[easter, columns.STATE_HOLIDAY] == "b").all()
    assert (completed.loc[~easter, columns.STATE_HOLIDAY] == "0").all()
    assert (completed.loc[easter, columns.OPEN] == 0).all()
    sunday = day.dt.dayofweek == 6
    assert (completed.loc[~easter & ~sunday, columns.OPEN] == 1).all()
    expected = ((day.dt.isocalendar().week % 2) == 0) & (day.dt.dayofweek < 5)
    expected.iloc[0] = False
    assert (completed[columns.PROMO] == expected.astype(int)).all()


def test_executors_keep_the_order_of_items() -> None:
    items = chunks(list(range(10)), 3)
    assert items == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert SequentialExecutor().map(sum, items) == [3, 12, 21, 9]
    assert ProcessPoolTaskExecutor(2).map(sum, items) == [3, 12, 21, 9]
    with pytest.raises(ValueError, match="chunk size"):
        chunks([1], 0)


# Single-store retrains of a store whose sales shifted: the global model's champion is
# corrected to the store's new level, and every other store forecasts exactly as before.
SHIFTED = 2
FACTOR = 1.6


def test_the_level_factor_fits_the_days_after_the_change() -> None:
    yhat = np.full(8, 100.0)
    actual = np.array([98, 103, 101, 99, 100, 160, 158, 162], dtype=float)
    assert level_factor(yhat, actual) == pytest.approx(1.6, abs=0.02)
    # No change: the factor fits every day.
    assert level_factor(yhat, np.full(8, 120.0)) == pytest.approx(1.2)
    assert level_factor(yhat[:1], actual[:1]) is None


def test_a_retrain_corrects_a_shifted_store_and_leaves_the_others_alone(tmp_path: Path) -> None:
    sales = synthetic_sales(days=448)
    stores = synthetic_stores()
    dates = sales[columns.SALES_DATE]
    cutoff = dates.max() - pd.Timedelta(days=28)
    shift_from = cutoff + pd.Timedelta(days=8)
    shifted = (sales[columns.STORE_ID] == SHIFTED) & (dates >= shift_from)
    sales.loc[shifted, columns.SALES] = (sales.loc[shifted, columns.SALES] * FACTOR).round()
    seen = sales[dates <= cutoff]
    bundle, _ = model_selection.train(
        seen,
        stores,
        ["seasonal_naive", "gbm"],
        windows=1,
        horizon_days=28,
        executor=SequentialExecutor(),
    )
    middle, later = cutoff + pd.Timedelta(days=14), sales[dates > cutoff + pd.Timedelta(days=14)]
    store_history = sales[(sales[columns.STORE_ID] == SHIFTED) & (dates <= middle)]

    retrained, report = retrain_series(bundle, store_history, stores)

    (factor,) = report.levels[LEVEL_FACTOR]
    assert factor == pytest.approx(FACTOR, rel=0.1)
    retrained.save(tmp_path / "bundle")
    loaded = ForecastBundle.load(tmp_path / "bundle", signing_key=None)
    before, after = bundle.predict(as_future(later)).frame, loaded.predict(as_future(later)).frame
    own = (later[columns.STORE_ID] == SHIFTED).to_numpy()
    actual = later[columns.SALES].to_numpy(dtype=float)
    old_error = metrics.rmspe(actual[own], before[columns.YHAT].to_numpy()[own])
    new_error = metrics.rmspe(actual[own], after[columns.YHAT].to_numpy()[own])
    assert old_error > 0.3
    assert new_error < old_error / 3
    pd.testing.assert_frame_equal(
        before[~own].reset_index(drop=True), after[~own].reset_index(drop=True), check_exact=True
    )


# A retrain that names its models: champions chosen among them only, a per-series model the
# bundle lacks added for the retrained series alone.
RETRAINED = 3


@pytest.fixture(scope="module")
def gbm_only_bundle(sales: pd.DataFrame, stores: pd.DataFrame) -> ForecastBundle:
    seen, _ = split(sales, 28)
    bundle, _ = model_selection.train(
        seen, stores, ["gbm"], windows=1, horizon_days=28, executor=SequentialExecutor()
    )
    return bundle


def test_a_retrain_with_a_model_set_adds_a_per_series_model_for_its_store_only(
    sales: pd.DataFrame, stores: pd.DataFrame, gbm_only_bundle: ForecastBundle, tmp_path: Path
) -> None:
    seen, later = split(sales, 28)
    store_history = seen[seen[columns.STORE_ID] == RETRAINED]

    retrained, report = retrain_series(
        gbm_only_bundle, store_history, stores, models=["seasonal_naive"]
    )

    naive = retrained.models["seasonal_naive"]
    assert isinstance(naive, SeasonalNaiveForecaster)
    assert naive.series_ == {(RETRAINED, "total")}
    assert naive.calibration_ is not None  # calibrated on this store's own backtest
    (champion,) = report.champions[columns.MODEL]
    assert champion == "seasonal_naive"  # the only candidate named
    retrained.save(tmp_path / "bundle")
    loaded = ForecastBundle.load(tmp_path / "bundle", signing_key=None)
    before = gbm_only_bundle.predict(as_future(later)).frame
    after = loaded.predict(as_future(later)).frame
    own = (later[columns.STORE_ID] == RETRAINED).to_numpy()
    expected = naive.predict(as_future(later[own]))
    np.testing.assert_allclose(
        after[columns.YHAT].to_numpy()[own], expected[columns.YHAT].to_numpy()
    )
    pd.testing.assert_frame_equal(
        before[~own].reset_index(drop=True), after[~own].reset_index(drop=True), check_exact=True
    )


def test_a_retrain_without_a_model_set_chooses_among_the_bundle_s_models(
    sales: pd.DataFrame, stores: pd.DataFrame, gbm_only_bundle: ForecastBundle
) -> None:
    seen, _ = split(sales, 28)
    retrained, report = retrain_series(
        gbm_only_bundle, seen[seen[columns.STORE_ID] == RETRAINED], stores
    )
    assert set(retrained.models) == {"gbm"}
    assert list(report.champions[columns.MODEL]) == ["gbm"]


def test_a_retrain_cannot_add_a_global_model(
    sales: pd.DataFrame, stores: pd.DataFrame, gbm_only_bundle: ForecastBundle
) -> None:
    seen, _ = split(sales, 28)
    store_history = seen[seen[columns.STORE_ID] == RETRAINED]
    naive_only = ForecastBundle(
        {"seasonal_naive": SeasonalNaiveForecaster().fit(seen, stores)},
        gbm_only_bundle.champions.assign(**{columns.MODEL: "seasonal_naive"}),
        gbm_only_bundle.usual_open,
        gbm_only_bundle.last_date,
    )
    with pytest.raises(GlobalModelNotInBundleError, match="no gbm"):
        retrain_series(naive_only, store_history, stores, models=["seasonal_naive", "gbm"])
    with pytest.raises(UnknownModelError, match="'arima'"):
        retrain_series(naive_only, store_history, stores, models=["arima"])


def test_a_model_set_is_checked_stripped_and_deduplicated() -> None:
    assert model_set([" prophet", "gbm", "prophet", ""]) == ("prophet", "gbm")
    with pytest.raises(UnknownModelError, match="unknown model 'arima'; choose from gbm"):
        model_set(["gbm", "arima"])
    with pytest.raises(ValueError, match="at least one model"):
        model_set([" "])


def serving_bundle(
    model: Forecaster, history: pd.DataFrame, stores: pd.DataFrame
) -> tuple[ForecastBundle, list[dt.date]]:
    """A bundle serving `model` to every series of `history`, with the plan's derived defaults
    (usual open weekdays and promotions, states), and the 14 days after its last."""
    keys = history[[columns.STORE_ID, columns.PRODUCT_ID]].drop_duplicates()
    bundle = ForecastBundle(
        {model.name: model},
        keys.assign(**{columns.MODEL: model.name, metrics.RMSPE: 0.1}),
        usual_open_weekdays(history),
        history[columns.SALES_DATE].max(),
        usual_promo=usual_promo_cycle(history),
        states=store_states(stores),
    )
    start = (bundle.last_date + pd.Timedelta(days=1)).date()
    return bundle, [start + dt.timedelta(days=offset) for offset in range(14)]


def test_a_planned_promotion_lifts_the_served_forecast_and_is_named_as_the_plan(
    sales: pd.DataFrame, stores: pd.DataFrame, fitted_gbm: GlobalGBMForecaster
) -> None:
    seen, _ = split(sales, 28)
    bundle, days = serving_bundle(fitted_gbm, seen, stores)
    # Store 3: promotions Monday to Friday of the first week, none in the second.
    planned = pd.DataFrame(
        {
            columns.STORE_ID: 3,
            columns.SALES_DATE: pd.to_datetime(days),
            columns.OPEN: [int(day.weekday() != 6) for day in days],
            columns.PROMO: [
                int(offset < 7 and day.weekday() != 6) for offset, day in enumerate(days)
            ],
            columns.STATE_HOLIDAY: "0",
            columns.SCHOOL_HOLIDAY: 0,
        }
    )
    served = serving.prepare(
        bundle, "1", "run", dt.datetime.now(dt.UTC), days[0], plan_by_store(as_plan(planned))
    )

    planned_store, other_store = (
        json.loads(body)
        for body in serving.forecast(
            served,
            forecast_requests.ForecastBatch.of(
                [forecast_requests.SeriesRequest(store, "total", tuple(days)) for store in (3, 4)]
            ),
        )
    )

    forecast = planned_store["forecast"]
    for offset in range(7):
        if days[offset].weekday() < 5:
            assert forecast[offset]["yhat"] > forecast[offset + 7]["yhat"] * 1.1
    assert all(set(day["covariate_sources"].values()) == {"plan"} for day in forecast)
    assert {s for day in other_store["forecast"] for s in day["covariate_sources"].values()} == {
        "default"
    }
    # The default horizon, kept as issued, records where its covariates came from.
    issued = served.default_forecast.groupby(columns.STORE_ID)["covariate_source"].unique()
    assert issued[3].tolist() == ["plan"]
    assert issued[4].tolist() == ["default"]
    # Sliced from the horizon computed at load (the GET path) and predicted agree.
    sliced = json.loads(
        serving.sliced(served, forecast_requests.SeriesRequest(3, "total", tuple(days))) or ""
    )
    assert sliced["forecast"] == forecast


def test_a_batch_finds_its_planned_days_as_each_series_request_does() -> None:
    start = dt.date(2015, 8, 1)
    days = [start + dt.timedelta(days=offset) for offset in range(10)]
    # Stores 2 and 5 have plans (5 for some days only), 3 has none; store 2's plan also
    # covers days nobody asks for.
    planned = pd.concat(
        [
            pd.DataFrame(
                {
                    columns.STORE_ID: store,
                    columns.SALES_DATE: pd.to_datetime(on),
                    columns.OPEN: [int(day.weekday() != 6) for day in on],
                    columns.PROMO: [(store + offset) % 2 for offset in range(len(on))],
                    columns.STATE_HOLIDAY: ["a" if day.day == 3 else "0" for day in on],
                    columns.SCHOOL_HOLIDAY: [int(day.day > 5) for day in on],
                }
            )
            for store, on in ((2, days), (5, days[3:6]))
        ]
    )
    plan = plan_by_store(as_plan(planned))
    requests = [
        forecast_requests.SeriesRequest(5, "total", tuple(days[2:9])),
        forecast_requests.SeriesRequest(3, "total", tuple(days[:4])),
        # Days out of order, and the caller's own covariates for one of them.
        forecast_requests.SeriesRequest(
            2, "total", (days[4], days[1], days[2]), {days[1]: {columns.PROMO: 1}}
        ),
    ]

    batch = forecast_requests.ForecastBatch.of(requests).with_plan(
        forecast_requests.PlanColumns.of(plan)
    )

    each = forecast_requests.ForecastBatch.of(
        [forecast_requests.with_plan(request, plan) for request in requests]
    )
    assert set(batch.planned) == set(forecast_requests.COVARIATES)
    for name in forecast_requests.COVARIATES:
        assert batch.planned[name].tolist() == each.planned[name].tolist(), name
    future, sources = batch.future()
    expected_future, expected_sources = each.future()
    pd.testing.assert_frame_equal(future, expected_future)
    assert (sources == expected_sources).all()
    # Store 5's planned days 3..5 of the 2..8 it asks for; store 3 none; store 2 all.
    assert batch.planned[columns.PROMO].tolist()[:7] == [None, 1, 0, 1, None, None, None]
    assert batch.planned[columns.STATE_HOLIDAY].tolist()[7:11] == [None] * 4
    # A plan that covers none of the days asked for leaves the batch as it was.
    assert (
        not forecast_requests.ForecastBatch.of(requests[1:2])
        .with_plan(forecast_requests.PlanColumns.of(plan))
        .planned
    )


def test_a_changed_plan_predicts_again_only_its_states_and_serves_what_a_fresh_load_would(
    sales: pd.DataFrame, stores: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen, _ = split(sales, 28)
    # Two products per store, so every store also has a summed total.
    products = pd.concat(
        [
            seen.assign(**{columns.PRODUCT_ID: "P001"}),
            seen.assign(**{columns.PRODUCT_ID: "P002", columns.SALES: seen[columns.SALES] / 2}),
        ],
        ignore_index=True,
    )
    bundle, days = serving_bundle(SeasonalNaiveForecaster().fit(products, stores), products, stores)

    def closures(store: int, closed: set[int]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                columns.STORE_ID: store,
                columns.SALES_DATE: pd.to_datetime(days),
                columns.OPEN: [int(offset not in closed) for offset in range(len(days))],
                columns.PROMO: 0,
                columns.STATE_HOLIDAY: "0",
                columns.SCHOOL_HOLIDAY: 0,
            }
        )

    now = dt.datetime.now(dt.UTC)
    before = plan_by_store(as_plan(pd.concat([closures(2, {1, 2}), closures(3, {4})])))
    # As a training job saves it with the bundle, and the API loads it.
    serving.horizon_forecasts(bundle, before).save(tmp_path)
    saved = serving.HorizonForecasts.load(tmp_path)
    assert saved is not None
    assert saved.plan == before
    assert serving.HorizonForecasts.load(tmp_path / "elsewhere") is None
    # Store 2 closes on other days, store 4 gets a plan; store 3's is unchanged. Stores 2
    # and 5 are in BY, 4 in NW, 1, 3 and 6 in HE.
    after = plan_by_store(
        as_plan(pd.concat([closures(2, {5}), closures(3, {4}), closures(4, {0, 1})]))
    )
    predicted: list[pd.DataFrame] = []
    predict = bundle.predict

    def recording(future: pd.DataFrame) -> Forecast:
        predicted.append(future)
        return predict(future)

    monkeypatch.setattr(bundle, "predict", recording)
    later = days[1]
    again = serving.prepare(bundle, "1", "run", now, later, after, earlier=saved)
    # A plan's state and school holidays reach its state's other stores: 5 is predicted too.
    assert set(pd.concat(predicted)[columns.STORE_ID]) == {2, 4, 5}
    # New sales alone (the plan as it was): nothing is predicted again.
    predicted.clear()
    serving.prepare(bundle, "1", "run", now, later, after, earlier=again.horizon_forecasts)
    assert predicted == []
    monkeypatch.undo()
    fresh = serving.prepare(bundle, "1", "run", now, later, after)

    kept, computed = again.horizon_forecasts, fresh.horizon_forecasts
    assert kept.rows == computed.rows
    np.testing.assert_array_equal(kept.values, computed.values)
    np.testing.assert_array_equal(kept.flags, computed.flags)
    np.testing.assert_array_equal(kept.state_holidays, computed.state_holidays)
    assert kept.assumptions == computed.assumptions
    assert again.default_bodies == fresh.default_bodies
    # The changed plan is served: store 2 closed on its new day, and its total with it.
    total = kept.values[kept.rows[(2, columns.DEFAULT_PRODUCT)]]
    assert (total[5] == 0).all()
    assert (total[1] > 0).all()


def test_the_plan_fills_what_the_caller_left_missing_and_the_caller_wins() -> None:
    future = future_days([(1, "total"), (2, "total")], pd.Timestamp("2015-08-01"), 2)
    future[columns.PROMO] = [np.nan, 0.0, np.nan, np.nan]  # the caller: no promotion on day 2
    planned = pd.DataFrame(
        {
            columns.STORE_ID: [1, 1],
            columns.SALES_DATE: pd.to_datetime(["2015-08-01", "2015-08-02"]),
            columns.OPEN: [1, 1],
            columns.PROMO: [1, 1],
            columns.STATE_HOLIDAY: ["a", "0"],
            columns.SCHOOL_HOLIDAY: [1, 0],
        }
    )

    frame, from_plan = apply_plan(future, as_plan(planned))

    assert frame[columns.PROMO].tolist()[:2] == [1.0, 0.0]  # planned; the caller's
    assert frame[columns.STATE_HOLIDAY].tolist()[:2] == ["a", "0"]
    assert frame[columns.PROMO].iloc[2:].isna().all()  # store 2 has no plan: left to derive
    assert from_plan[columns.PROMO].tolist() == [True, False, False, False]
    assert from_plan[columns.OPEN].tolist() == [True, True, False, False]


def test_a_warm_up_builds_what_a_sharded_gbm_builds_on_its_first_forecast(
    sales: pd.DataFrame, stores: pd.DataFrame
) -> None:
    seen, _ = split(sales, 28)
    sharded = GlobalGBMForecaster(replace(SMALL_GBM, shard_series=3)).fit(seen, stores)
    trained, days = serving_bundle(sharded, seen, stores)
    now = dt.datetime.now(dt.UTC)
    saved = serving.prepare(trained, "1", "run", now, days[0]).horizon_forecasts
    # A champion loaded as the API loads one: from its files, with the horizon its training
    # job saved, so that nothing is predicted while preparing it.
    loaded = pickle.loads(pickle.dumps(trained))
    served = serving.prepare(loaded, "1", "run", now, days[0], earlier=saved)
    gbm = loaded.models[sharded.name]
    assert "_shard_tables" not in vars(gbm)

    serving.warm_up(served)

    assert "_shard_tables" in vars(gbm)
    # It changes no forecast.
    request = forecast_requests.ForecastBatch.of(
        [forecast_requests.SeriesRequest(4, "total", tuple(days))]
    )
    assert serving.forecast(served, request) == serving.forecast(
        serving.prepare(trained, "1", "run", now, days[0], earlier=saved), request
    )
