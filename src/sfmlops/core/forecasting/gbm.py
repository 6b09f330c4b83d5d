"""`gbm`: one global LightGBM model over every store, on a log-sales target."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import pandas as pd

from sfmlops.core import columns
from sfmlops.core.forecasting.base import CalibratedForecaster, IntervalCalibration
from sfmlops.core.forecasting.executors import Executor, SequentialExecutor
from sfmlops.core.forecasting.features import (
    REOPENING_CAP_DAYS,
    Calendar,
    CalendarCarry,
    KeyedTable,
    StoreStats,
    StoreTables,
    build_features,
    feature_columns,
    state_flags,
    store_profile,
)

if TYPE_CHECKING:
    import lightgbm as lgb

# The calendar's proximity features look this far back from a forecast day.
_CONTEXT_DAYS = REOPENING_CAP_DAYS + 7
_STORE_LEVEL = "store_mean_log"
_WEEKDAY_EFFECT = "store_weekday_effect"
_SERIES_CODE = "series_code"
# Requests with fewer feature rows predict on one thread (see `_predict_point`).
_ONE_THREAD_ROWS = 1_000
# What predictions build once per loaded model from its fitted state (never saved).
_PREDICTION_CACHES = ("_context_days", "_series_index", "_store_tables", "_shard_tables")
# What the calendar reads of a store's rows (`Calendar.of_parts`).
_CALENDAR_ROW_COLUMNS = (columns.STORE_ID, columns.SALES_DATE, columns.OPEN, columns.PROMO)
# What a fitted model keeps of its history's last days (`context_`), for the calendar.
_CONTEXT_COLUMNS = (
    *_CALENDAR_ROW_COLUMNS,
    columns.STATE_HOLIDAY,
    columns.SCHOOL_HOLIDAY,
)


# Days until the next promotion starts or ends, left out by default: with them the model
# forecast the week after Easter 2014 (no promotion, after a promotion week ending on Good
# Friday) at 1.4 times the actuals, on every window measured they cost accuracy
# (docs/benchmarks.md). Days since a promotion started or ended stay.
LOOKAHEAD_PROMO_FEATURES = ("days_before_promo",)


@dataclass(frozen=True)
class GBMParams:
    """LightGBM settings of the global model.

    The field defaults are one booster's; the model fitted by default is `DEFAULT_PARAMS`, a
    blend of two. The defaults trade a little accuracy for training time: on 2 cores a fit over all 1,115
    stores (about 800,000 open days) takes about 20 s. 250 rounds rather than 300 cost 0.0004
    to 0.0006 RMSPE on each of the last three 48-day backtest windows for a sixth less time
    (docs/benchmarks.md); a full training job fits one booster per backtest window (and a
    cheaper probe where a rolling window has no window just before it) and `members` for the
    served one.
    """

    rounds: int = 250
    learning_rate: float = 0.1
    # Leaves of >= 30 days drawing 70 % of the days per round (until 2026-12-05: >= 100 days,
    # 40 %): chosen on the season window 2014-06-14..07-31, at the same training time. 95
    # leaves in every booster scored better still but took sfmlops train to 152 s on 2 cores,
    # over its 150 s budget (docs/benchmarks.md, "Tuning the gbm"); `DEFAULT_PARAMS` serves
    # 95 and backtests 63 (`backtest_num_leaves`).
    num_leaves: int = 63
    min_data_in_leaf: int = 30
    feature_fraction: float = 0.7
    bagging_fraction: float = 0.7
    # A new bag every round. Every 5th round cut a 2,500-series shard's CPU time by a fifth
    # but cost accuracy (synthetic shard RMSPE 0.2986 against 0.2980, the bundled season
    # window 0.1152 against 0.1146, both with the tree settings before the tuning above;
    # docs/benchmarks.md), so it stays 1.
    bagging_freq: int = 1
    max_bin: int = 63
    # The store id split as a category (groups of stores on each side) rather than as a
    # number (ranges of ids, 63 bins of about 18 stores each): trees can then set stores
    # apart by what they share, not by where their ids fall. Each store's mean in a split
    # is shrunk towards the leaf's by `category_smoothing` days (LightGBM's `cat_smooth`
    # and `cat_l2`, 10 by default): a single store's few odd days then move no split.
    store_as_category: bool = False
    category_smoothing: float = 100.0
    threads: int = 2
    seed: int = 17
    # Boosters fitted with seeds seed, seed + 1, ...; the forecast is their mean on the log
    # scale. Each costs one more LightGBM fit (not more features). Only the model that serves
    # blends them: a backtest window or a calibration probe fits the first member alone
    # (`backtest_stand_in`), so a training job pays for the blend once, in its final fit, and
    # its backtest errors are a single booster's (a little larger than the blend's: intervals
    # and the RMSPE factor err on the safe side).
    #
    # `BLEND` (two members, the second without the day and week of the year, with the
    # promotion x school holiday code) scored lower than one booster on the season, spring
    # and last windows with two seed pairs and through the whole pipeline on the season and
    # check windows, but took sfmlops train to 168 s on 2 cores, over its 150 s budget
    # (docs/benchmarks.md, "A blend of two boosters"); `DEFAULT_PARAMS` is a cheaper blend.
    members: int = 1
    # Features the members after the first leave out as well: a blend of boosters that split
    # on different features errs less alike than one of seeds alone.
    member_excluded_features: tuple[str, ...] = ()
    # Rounds and learning rate of the members after the first (None: the first's). Fewer
    # rounds at a higher rate make a blend's extra boosters cheaper: the second booster's
    # time is most of what a blend adds to a training job (150 rounds at 0.15 cost the season
    # window 0.0006 in raw fits against 250 at 0.1, which `DEFAULT_PARAMS` fits since
    # 2026-12-07; docs/benchmarks.md, "A larger served blend").
    member_rounds: int | None = None
    member_learning_rate: float | None = None
    # Rounds and learning rate of the booster a backtest window fits (None: the first
    # member's). Backtest windows are most of a training job's LightGBM time; a cheaper
    # stand-in there can pay for a larger served model, at the price of calibrating
    # intervals and the RMSPE factor on a weaker model's errors (a little wide for it).
    backtest_rounds: int | None = None
    backtest_learning_rate: float | None = None
    # Leaves of the backtest's booster (None: the first member's): larger trees in the served
    # model only cost a training job one fit's extra time, not one per backtest window.
    backtest_num_leaves: int | None = None
    # Most series one booster is fitted on. More are split into shards of whole stores,
    # each a model of its own (a task of the injected executor), so the features built at
    # once (the memory peak of a fit) stay bounded whatever the series count. The bundled
    # data (1,115 series) and anything up to this size is one model, as before. On 10k
    # synthetic series, 4 shards of 2,500 took 290 s and 2.4 GiB at peak against 528 s and
    # 4.2 GiB for one model, at the same RMSPE (benchmarks/gbm_shards.py, docs/benchmarks.md).
    shard_series: int = 2_500
    # Features left out, by name prefix (ablations in benchmarks/gbm_trials.py). The
    # promotion x school holiday code moved the season window within the seed noise on its
    # own (it gains in `BLEND`).
    excluded_features: tuple[str, ...] = (*LOOKAHEAD_PROMO_FEATURES, "promo_school_holiday")

    def lightgbm(self) -> dict[str, Any]:
        """The parameters as LightGBM names them."""
        return {
            "objective": "regression",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "max_bin": self.max_bin,
            **(
                {"cat_smooth": self.category_smoothing, "cat_l2": self.category_smoothing}
                if self.store_as_category
                else {}
            ),
            "num_threads": self.threads,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbose": -1,
        }


# Two boosters averaged on the log scale, the second with the next seed and without the day
# and week of the year (without them a booster keeps the year's shape from the month, the day
# of the month and the holiday calendars, but cannot replay one-off days of the year it learnt
# them from), both with the promotion x school holiday code. See `GBMParams.members`.
BLEND = GBMParams(
    members=2,
    member_excluded_features=("day_of_year", "week_of_year"),
    excluded_features=LOOKAHEAD_PROMO_FEATURES,
)

# What `GlobalGBMForecaster()` fits (the default model set's gbm): `BLEND` with boosters of
# 95 leaves, while backtest windows fit one booster of 63 leaves and 170 rounds at 0.15, so
# the larger served blend costs a training job its final fit's extra time only. Through the
# whole pipeline, against the blend before it (a second booster of 150 rounds at 0.15, 63
# leaves; the same backtest), seeds 17-19: the season window 0.1050 against 0.1055, the data's
# last 48 days 0.0978 against 0.0982 (docs/benchmarks.md, "A larger served blend"). The store
# id stays a number: as a category (`store_as_category`) it lowered the season window to
# 0.1040 (seeds 17-19), but its trees' paths are 1.7 times as deep (a leaf at depth 10.6 on
# average against 6.1), so a forecast costs 44-69 % more CPU (every store x 7 days 256-281
# against 166-178 ms) and the 100k series' every-store POST took 408 ms at p50 against
# 162 ms, its default training 47.1 min against 36.6 (budgets: 200 ms, 45 min;
# docs/benchmarks.md, "The store id as a category").
DEFAULT_PARAMS = replace(
    BLEND,
    num_leaves=95,
    backtest_rounds=170,
    backtest_learning_rate=0.15,
    backtest_num_leaves=63,
)


class GlobalGBMForecaster(CalibratedForecaster):
    """One gradient-boosted model for all stores (the accuracy workhorse).

    Trained on open days with sales > 0; the target is log1p(sales) minus the store's mean
    log sales and weekday effect of the training window, so trees learn deviations from
    each store's own level (promotions, holidays, seasons, closures) shared across stores.
    Store statistics come from the history given to `fit` only.
    """

    name: ClassVar[str] = "gbm"
    per_series: ClassVar[bool] = False

    def __init__(
        self,
        params: GBMParams | None = None,
        calibration_days: int = 48,
        rmspe_scaling: bool = True,
        calibration: IntervalCalibration | None = None,
        executor: Executor | None = None,
    ) -> None:
        super().__init__(calibration_days, rmspe_scaling, calibration)
        self.params = params or DEFAULT_PARAMS
        # Fits the shards, one task each (default: in turn in this process). Not saved.
        self.executor = executor
        self.booster_: lgb.Booster | None = None
        # With `params.members` > 1: the boosters after the first, other seeds, and the
        # features each of them was fitted on.
        self.member_boosters_: list[lgb.Booster] = []
        self.member_features_: list[list[str]] = []
        self.profile_: pd.DataFrame | None = None
        self.stats_: StoreStats | None = None
        self.context_: pd.DataFrame | None = None
        self.features_: list[str] = []
        # None while every store has one product; else each (store, product) series' code,
        # which stands in for the store id inside the model (see `_series_as_stores`).
        self.series_codes_: pd.DataFrame | None = None
        # With more series than `params.shard_series`: one fitted model per shard of
        # stores, and each store's shard; the fields above then stay unset.
        self.shards_: list[GlobalGBMForecaster] | None = None
        self.shard_of_store_: dict[int, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        # An executor (e.g. a Ray client) is no part of a saved or shipped model, nor is what
        # predictions cached (a model saved after serving is the model saved before).
        state = {**self.__dict__, "executor": None}
        for name in _PREDICTION_CACHES:
            state.pop(name, None)
        return state

    def _params(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "calibration_days": self.calibration_days,
            "rmspe_scaling": self.rmspe_scaling,
            "calibration": self.calibration,
            "executor": self.executor,
        }

    def fans_out_on(self, history: pd.DataFrame) -> bool:
        """True when `history` is fitted in shards and an executor can fit them as tasks."""
        return (
            self.executor is not None and len(store_shards(history, self.params.shard_series)) > 1
        )

    def backtest_stand_in(self) -> Self:
        """The first member of a blend alone (see `GBMParams.members`), with the backtest's
        rounds and learning rate; this model when that is the same."""
        params = self.params
        if (
            params.members <= 1
            and params.backtest_rounds is None
            and params.backtest_learning_rate is None
            and params.backtest_num_leaves is None
        ):
            return self
        stand_in = replace(
            params,
            members=1,
            rounds=params.backtest_rounds or params.rounds,
            learning_rate=params.backtest_learning_rate or params.learning_rate,
            num_leaves=params.backtest_num_leaves or params.num_leaves,
        )
        return type(self)(**{**self._params(), "params": stand_in})

    def stand_in_description(self) -> str | None:
        """E.g. `one booster of 170 rounds at learning rate 0.15, in place of the served
        blend of 2 boosters (...)`; None when backtests fit this model itself."""
        stand_in = self.backtest_stand_in()
        if stand_in is self:
            return None
        return f"{_boosters(stand_in.params)}, in place of the served {_boosters(self.params)}"

    def _probe(self) -> Self:
        # A third of the rounds at up to three times the rate: errors close to the full
        # model's for a third of the time (only a backtest's first rolling window is probed); one
        # member of a blend, as in the backtest windows.
        cheaper = replace(
            self.params,
            rounds=max(1, self.params.rounds // 3),
            learning_rate=min(0.3, self.params.learning_rate * 3),
            members=1,
        )
        return type(self)(**{**self._params(), "params": cheaper})

    def _fit_point(self, history: pd.DataFrame, stores: pd.DataFrame) -> Self:
        shards = store_shards(history, self.params.shard_series)
        if len(shards) > 1:
            executor = self.executor or SequentialExecutor()
            # Shards fitted side by side share the CPUs: each fits with its share of threads
            # (the model does not depend on the thread count), so none waits on another's.
            threads = min(self.params.threads, max(1, int(executor.cpus_per_task)))
            unfitted = type(self)(
                **{
                    **self._params(),
                    "params": replace(self.params, threads=threads),
                    "executor": None,
                }
            )
            tasks = (
                (
                    unfitted,
                    history.take(rows).reset_index(drop=True),
                    stores[stores[columns.STORE_ID].isin(store_ids)],
                )
                for store_ids, rows in zip(shards, shard_rows(history, shards), strict=True)
            )
            self.shards_ = executor.map(fit_shard, tasks)
            self.shard_of_store_ = {
                int(store_id): number
                for number, store_ids in enumerate(shards)
                for store_id in store_ids
            }
            return self
        self.shards_ = None
        history, stores = self._series_as_stores(history, stores)
        profile = store_profile(stores)
        stats = StoreStats.of(history)
        calendar = Calendar.of(history, profile)
        sold = history[(history[columns.OPEN] == 1) & (history[columns.SALES] > 0)].reset_index(
            drop=True
        )
        features = build_features(sold, profile, stats, calendar)
        if self.params.excluded_features:
            features = features.drop(
                columns=[
                    name
                    for name in features.columns
                    if str(name).startswith(self.params.excluded_features)
                ]
            )
        target = np.log1p(sold[columns.SALES].to_numpy(dtype=float)) - _baseline(features)
        lgb = _lightgbm()
        members = max(1, self.params.members)
        member_features = [
            name
            for name in features.columns
            if not str(name).startswith(self.params.member_excluded_features)
        ]
        feature_sets = [list(features.columns), *[member_features] * (members - 1)]
        datasets: dict[tuple[str, ...], Any] = {}
        boosters = []
        for member, names in enumerate(feature_sets):
            # Members with the same features share one binned dataset.
            dataset = datasets.get(tuple(names))
            if dataset is None:
                dataset = datasets[tuple(names)] = lgb.Dataset(
                    features[names].to_numpy(dtype=np.float32),
                    target,
                    feature_name=names,
                    categorical_feature=(
                        [columns.STORE_ID]
                        if self.params.store_as_category and columns.STORE_ID in names
                        else "auto"
                    ),
                    params={"max_bin": self.params.max_bin, "verbose": -1},
                    # Kept only for a later member that trains on the same features.
                    free_raw_data=names not in feature_sets[member + 1 :],
                )
            rounds, learning_rate = self.params.rounds, self.params.learning_rate
            if member > 0:
                rounds = self.params.member_rounds or rounds
                learning_rate = self.params.member_learning_rate or learning_rate
            boosters.append(
                lgb.train(
                    {
                        **self.params.lightgbm(),
                        "seed": self.params.seed + member,
                        "learning_rate": learning_rate,
                    },
                    dataset,
                    num_boost_round=rounds,
                )
            )
        self.booster_, self.member_boosters_ = boosters[0], boosters[1:]
        self.member_features_ = feature_sets[1:]
        self.profile_ = profile
        self.stats_ = stats
        self.features_ = list(features.columns)
        last = history[columns.SALES_DATE].max()
        self.context_ = history.loc[
            history[columns.SALES_DATE] > last - pd.Timedelta(days=_CONTEXT_DAYS),
            list(_CONTEXT_COLUMNS),
        ].reset_index(drop=True)
        return self

    def _predict_open_days(self, future: pd.DataFrame) -> np.ndarray:
        # Closed days forecast 0 whatever the trees say (`forecast_frame`): their features and
        # trees are left out (every Sunday: a seventh of a week's rows), and they still count
        # in the calendar as closures.
        return self._predict_point(future, open_days_only=True)

    def _predict_point(self, future: pd.DataFrame, open_days_only: bool = False) -> np.ndarray:
        """Point forecasts of `future`'s rows; with `open_days_only`, 0 for rows of closed
        days (`open` 0), which are then not predicted."""
        # Models saved before shards existed have no attribute: one model.
        shards = getattr(self, "shards_", None)
        if shards:
            return self._predict_sharded(future, shards, open_days_only)
        if self.booster_ is None or self.profile_ is None or self.stats_ is None:
            raise RuntimeError("gbm: not fitted")
        # Models saved before series codes existed have no attribute: one product per store.
        series_codes = getattr(self, "series_codes_", None)
        if series_codes is not None:
            index = self.__dict__.get("_series_index")
            if index is None:
                # Once per loaded model: building the index of a shard's 2,500 series (and
                # its hash table) per request cost more than the rest of its coding.
                index = self._series_index = _series_index(series_codes)
            future = _coded(future, series_codes, index)
        tables = self._store_tables_of()
        calendar = self._calendar_of(future)
        predicted = _predicted_rows(future, open_days_only)
        rows = future if predicted is None else future.take(predicted)
        features = feature_columns(rows, tables, calendar)
        matrices = _FeatureMatrices(features, len(rows))
        sales = np.expm1(self._deviation(matrices.of, len(rows)) + _baseline(features))
        return _spread(sales, predicted, len(future))

    def _store_tables_of(self) -> StoreTables:
        """The profile and statistics as requests look them up (built once per loaded model)."""
        tables: StoreTables | None = self.__dict__.get("_store_tables")
        if tables is None:
            if self.profile_ is None or self.stats_ is None:
                raise RuntimeError("gbm: not fitted")
            tables = self._store_tables = StoreTables.of(self.profile_, self.stats_)
        return tables

    def _calendar_of(self, future: pd.DataFrame) -> Calendar:
        """The calendar of the stored context and `future` (rows keyed as the model's
        stores), as `Calendar.of` of both builds it (see `_request_calendar`)."""
        profile = self._store_tables_of().profile
        context = self.__dict__.get("_context_days")
        if context is None:
            rows = self.context_ if self.context_ is not None else future.iloc[:0]
            context = self._context_days = _ContextDays.of(rows, profile)
        return _request_calendar(context, future, profile)

    def _deviation(
        self,
        matrix_of: Callable[[list[str]], np.ndarray],
        rows: int,
        one_thread: bool | None = None,
    ) -> np.ndarray:
        """The boosters' mean forecast of the log deviation from each row's baseline, for
        `rows` rows whose feature matrix over given feature names `matrix_of` returns; on
        one LightGBM thread with `one_thread` (None: when the rows are few)."""
        if self.booster_ is None:
            raise RuntimeError("gbm: not fitted")
        # A few rows predict on one thread: LightGBM's threads cost more to start and join
        # than such a request's trees (0.9 against 0.1 ms for 14 rows on 2 cores, and far
        # more on busy cores). The forecasts do not depend on the thread count.
        if one_thread is None:
            one_thread = rows < _ONE_THREAD_ROWS
        threads = {"num_threads": 1} if one_thread else {}
        members = getattr(self, "member_boosters_", [])
        predictions = [
            np.asarray(booster.predict(matrix_of(names), **threads), dtype=float)
            for booster, names in zip([self.booster_, *members], self._feature_sets(), strict=True)
        ]
        deviation: np.ndarray = np.mean(predictions, axis=0)
        return deviation

    def _feature_sets(self) -> list[list[str]]:
        """The features of each booster, the first's first."""
        # Models saved before blends existed have no member attributes: one booster; before
        # members had features of their own, every member used the first's.
        members = getattr(self, "member_boosters_", [])
        return [
            self.features_,
            *(getattr(self, "member_features_", None) or [self.features_] * len(members)),
        ]

    def _predict_sharded(
        self, future: pd.DataFrame, shards: list[GlobalGBMForecaster], open_days_only: bool
    ) -> np.ndarray:
        """Each row forecast by its store's shard, with one calendar and feature pass for the
        whole request where the shards' tables allow it (`_ShardTables`), else shard by shard.

        Both give the same forecasts: a shard's calendar, features and trees for its rows
        depend only on its own tables and the request's rows of its stores.
        """
        if "_shard_tables" not in self.__dict__:
            self._shard_tables = _ShardTables.of(shards, self.shard_of_store_)
        tables: _ShardTables | None = self.__dict__["_shard_tables"]
        shard_of_row = (
            tables.shard_of(future[columns.STORE_ID].to_numpy())
            if tables is not None
            else future[columns.STORE_ID].map(self.shard_of_store_).fillna(-1).to_numpy(dtype=int)
        )
        if (shard_of_row < 0).any():
            raise ValueError("gbm: a store the model was not fitted on")
        if tables is not None:
            across = tables.predict(future, shard_of_row, shards, open_days_only)
            if across is not None:
                return across
        return _predict_shard_by_shard(future, shard_of_row, shards, open_days_only)

    def _series_as_stores(
        self, history: pd.DataFrame, stores: pd.DataFrame
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """History and store metadata where each (store, product) series is a store of its own.

        The features (levels, weekday effects, recent level, calendars) are per store id;
        with several products per store they would blend the store's products into one
        level. Giving each series a code in the store id's place makes them per series,
        with the store's metadata and covariates. One product per store (the Rossmann data)
        keeps the store ids as they are, so that model is unchanged.
        """
        products_per_store = history.groupby(columns.STORE_ID)[columns.PRODUCT_ID].nunique()
        if products_per_store.empty or products_per_store.max() <= 1:
            self.series_codes_ = None
            return history, stores
        series = (
            history[[columns.STORE_ID, columns.PRODUCT_ID]]
            .drop_duplicates()
            .sort_values([columns.STORE_ID, columns.PRODUCT_ID])
            .reset_index(drop=True)
        )
        series[_SERIES_CODE] = np.arange(1, len(series) + 1, dtype=np.int64)
        self.series_codes_ = series
        coded_stores = (
            series.merge(stores, on=columns.STORE_ID, how="inner")
            .drop(columns=[columns.STORE_ID, columns.PRODUCT_ID])
            .rename(columns={_SERIES_CODE: columns.STORE_ID})
        )
        return _coded(history, series), coded_stores

    def feature_importance(self) -> pd.Series:
        """Total gain per feature, largest first (summed over shards)."""
        if self.shards_:
            gains = pd.concat([shard.feature_importance() for shard in self.shards_], axis=1)
            return gains.sum(axis=1).sort_values(ascending=False)
        if self.booster_ is None:
            raise RuntimeError("gbm: not fitted")
        gain = self.booster_.feature_importance(importance_type="gain")
        return pd.Series(gain, index=self.features_).sort_values(ascending=False)

    def describe(self) -> dict[str, Any]:
        """Parameters for tracking."""
        return {"model": self.name, **asdict(self.params)}


def _boosters(params: GBMParams) -> str:
    """The boosters `params` fit, in words (see `stand_in_description`)."""
    first = f"{params.rounds} rounds at learning rate {params.learning_rate:g}"
    if params.members <= 1:
        return f"one booster of {first}, {params.num_leaves} leaves"
    later = (
        f"{params.member_rounds or params.rounds} rounds at "
        f"{params.member_learning_rate or params.learning_rate:g}"
    )
    if params.member_excluded_features:
        later += f" without {', '.join(params.member_excluded_features)}"
    return (
        f"blend of {params.members} boosters of {params.num_leaves} leaves ({first}; then {later})"
    )


def fit_shard(
    task: tuple[GlobalGBMForecaster, pd.DataFrame, pd.DataFrame],
) -> GlobalGBMForecaster:
    """Fit a copy of an unsharded gbm on one shard's (history, stores): a picklable task for
    executors (one Ray task per shard)."""
    forecaster, history, stores = task
    return copy.deepcopy(forecaster)._fit_point(history, stores)


def store_shards(history: pd.DataFrame, shard_series: int) -> list[list[int]]:
    """The history's stores in consecutive shards of at most `shard_series` series (a store
    with more products than that is a shard of its own); one shard when all fit."""
    per_store = history.groupby(columns.STORE_ID, sort=True)[columns.PRODUCT_ID].nunique()
    if per_store.sum() <= shard_series:
        return [per_store.index.astype(int).tolist()]
    shards: list[list[int]] = [[]]
    filled = 0
    for store_id, series in zip(
        per_store.index.astype(int).tolist(), per_store.astype(int).tolist(), strict=True
    ):
        if shards[-1] and filled + series > shard_series:
            shards.append([])
            filled = 0
        shards[-1].append(store_id)
        filled += series
    return shards


def shard_rows(history: pd.DataFrame, shards: list[list[int]]) -> list[np.ndarray]:
    """Each shard's row positions in `history`, in the history's order.

    One pass over the history for all shards: filtering it once per shard scanned every
    row 40 times per fit at 100k series (3 fits per training job).
    """
    shard_numbers = pd.Series(
        [number for number, store_ids in enumerate(shards) for _ in store_ids],
        index=[store_id for store_ids in shards for store_id in store_ids],
    )
    # A row of a store in no shard gets -1 and lands in none.
    number = (
        shard_numbers.reindex(history[columns.STORE_ID].to_numpy()).fillna(-1).to_numpy(dtype=int)
    )
    order = np.argsort(number, kind="stable")
    bounds = np.searchsorted(number[order], np.arange(len(shards) + 1))
    return [order[bounds[index] : bounds[index + 1]] for index in range(len(shards))]


def _predict_shard_by_shard(
    future: pd.DataFrame,
    shard_of_row: np.ndarray,
    shards: list[GlobalGBMForecaster],
    open_days_only: bool,
) -> np.ndarray:
    """Each shard's rows of `future` forecast by that shard as a model of its own."""
    sharded = np.empty(len(future))
    for number, shard in enumerate(shards):
        rows = np.flatnonzero(shard_of_row == number)
        if len(rows):
            sharded[rows] = shard._predict_point(
                future.iloc[rows].reset_index(drop=True), open_days_only
            )
    return sharded


def _predicted_rows(future: pd.DataFrame, open_days_only: bool) -> np.ndarray | None:
    """The positions of the rows to predict: those of open days with `open_days_only`;
    None for every row."""
    if not open_days_only:
        return None
    is_open = future[columns.OPEN].to_numpy() == 1
    return None if is_open.all() else np.flatnonzero(is_open)


def _spread(values: np.ndarray, rows: np.ndarray | None, count: int) -> np.ndarray:
    """`values` of `rows` (None: of every row) among `count` rows, 0 in the others."""
    if rows is None:
        return values
    spread = np.zeros(count)
    spread[rows] = values
    return spread


def _series_index(series_codes: pd.DataFrame) -> pd.MultiIndex:
    """The (store, product) index of `series_codes`' rows."""
    return pd.MultiIndex.from_frame(series_codes[[columns.STORE_ID, columns.PRODUCT_ID]])


def _coded(
    frame: pd.DataFrame, series_codes: pd.DataFrame, index: pd.MultiIndex | None = None
) -> pd.DataFrame:
    """`frame` with each row's series code as its store id (rows keep their order); `index`
    is `_series_index(series_codes)` when already at hand."""
    codes = _series_index(series_codes) if index is None else index
    position = codes.get_indexer(
        pd.MultiIndex.from_arrays(
            [frame[columns.STORE_ID].to_numpy(), frame[columns.PRODUCT_ID].to_numpy()]
        )
    )
    if (position < 0).any():
        raise ValueError("gbm: a series the model was not fitted on")
    coded = frame.copy()
    coded[columns.STORE_ID] = series_codes[_SERIES_CODE].to_numpy()[position]
    return coded


def _lightgbm() -> ModuleType:
    """LightGBM, imported on first use with OpenMP threads that sleep when idle.

    OpenMP's default busy-waiting makes a 2-thread fit 20-30 times slower when the cores
    are shared with other processes (measured here: 2.2 s instead of 0.06 s per round), and
    the policy is read once, when the OpenMP runtime loads: so before LightGBM is imported.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import lightgbm  # noqa: PLC0415

    return lightgbm


def _baseline(features: Mapping[str, Any] | pd.DataFrame) -> np.ndarray:
    """Each row's store level plus weekday effect (0 for a weekday never open in training),
    from a feature frame or `feature_columns`."""
    level = np.asarray(features[_STORE_LEVEL], dtype=float)
    weekday = np.asarray(features[_WEEKDAY_EFFECT], dtype=float)
    baseline: np.ndarray = np.where(np.isnan(level), 0.0, level) + np.where(
        np.isnan(weekday), 0.0, weekday
    )
    return baseline


def _request_calendar(context: _ContextDays, future: pd.DataFrame, profile: KeyedTable) -> Calendar:
    """The calendar of the stored context and `future`, as `Calendar.of` of both builds it.

    The states' holidays come from every store of the context, the same for each request:
    they are aggregated once per loaded model (at 100k series a shard's context holds about
    160,000 rows, and rebuilding it per request cost 0.2 s per shard), and only the
    requested stores' states are read. Closures and promotions come from the requested
    stores' own rows only. Both are found by binary search in arrays sorted once per
    loaded model: filtering the frames per request cost more than a one-series forecast's
    trees. A request whose days all follow the context (the usual forecast) reads only what
    the context's calendar carries into later days (`CalendarCarry`), not its rows.
    """
    future_flags = state_flags(future, profile)
    future_rows = {name: future[name].to_numpy() for name in _CALENDAR_ROW_COLUMNS}
    after = context.carry.calendar_after(future_flags, future_rows)
    if after is not None:
        return after
    context_flags = context.state_flags_of(future_flags[columns.STATE])
    store_rows = context.store_rows(future[columns.STORE_ID].to_numpy())
    # Arrays, not frames: concatenating and framing them per request cost a fifth of a
    # small request's calendar, and a sharded model paid it in every shard touched.
    return Calendar.of_parts(
        {
            name: np.concatenate([context_flags[name], values])
            for name, values in future_flags.items()
        },
        {
            name: np.concatenate([store_rows[name], future_rows[name]])
            for name in _CALENDAR_ROW_COLUMNS
        },
    )


class _FeatureMatrices:
    """The float32 matrices of a request's feature columns, one per list of feature names
    asked for (the members of a blend that share features share one); with `order`, their
    rows are the feature rows in that order."""

    def __init__(
        self, features: Mapping[str, np.ndarray], rows: int, order: np.ndarray | None = None
    ) -> None:
        self.features = features
        self.rows = rows
        self.order = order
        self.built: dict[tuple[str, ...], np.ndarray] = {}

    def of(self, names: list[str]) -> np.ndarray:
        """The matrix of these columns, in this order."""
        matrix = self.built.get(tuple(names))
        if matrix is None:
            matrix = np.column_stack(
                [np.asarray(self.features[name], dtype=np.float32) for name in names]
            ).reshape(self.rows, len(names))
            if self.order is not None:
                matrix = matrix[self.order]
            self.built[tuple(names)] = matrix
        return matrix


@dataclass(frozen=True)
class _ShardTables:
    """Every shard's prediction tables side by side, so that one calendar and feature pass
    serves a request however many shards it touches (built once per loaded model, never
    saved). At 100k series an every-store request touches all 42 shards, and building each
    shard's calendar and features apart cost about 6 ms of fixed CPU per shard.

    Keys keep the shards apart, so each row's features are exactly its own shard's: a
    shard's store id (or series code) k is `offsets[shard] + k` here, and its state s is
    `shard * state_span + s + 1`, so that a state's holidays are still aggregated from the
    shard's own stores and the request's rows of them, as the shard's own calendar does.
    The store id and state features are put back to the shard's own values for its trees.

    Attributes:
        stores: Every store id, sorted; `store_shards` the shard of each.
        offsets: Each shard's key offset.
        coded: Whether each shard codes its series (several products per store) or keys
            its rows by store id.
        series: The (store, product) series of the coding shards; `series_codes` their
            codes in their shards.
        tables: The shards' profiles and statistics, keyed as above.
        context: The shards' stored contexts, keyed as above.
        state_span: More than any shard's largest state code + 1.
    """

    stores: np.ndarray
    store_shards: np.ndarray
    offsets: np.ndarray
    coded: np.ndarray
    series: pd.MultiIndex
    series_codes: np.ndarray
    tables: StoreTables
    context: _ContextDays
    state_span: int

    @classmethod
    def of(
        cls, shards: list[GlobalGBMForecaster], shard_of_store: Mapping[int, int]
    ) -> _ShardTables | None:
        """The tables of these fitted shards (`shard_of_store`: each store's shard); None
        where one pass could not give every row its own shard's features, so that each
        shard predicts its rows apart: shards whose tables differ in columns, negative
        keys, or stored context rows of a store without a profile (whose state holidays
        would not be the shard's)."""
        profiles = [shard.profile_ for shard in shards if shard.profile_ is not None]
        stats = [shard.stats_ for shard in shards if shard.stats_ is not None]
        if len(profiles) < len(shards) or len(stats) < len(shards):
            return None
        if not _same_columns(profiles) or not _same_columns([s.by_store for s in stats]):
            return None
        contexts = [
            shard.context_
            if shard.context_ is not None
            else pd.DataFrame({name: [] for name in _CONTEXT_COLUMNS})
            for shard in shards
        ]
        keys = [
            np.concatenate(
                [
                    frame[columns.STORE_ID].to_numpy(dtype=np.int64)
                    for frame in (profile, shard_stats.by_store, context)
                ]
            )
            for profile, shard_stats, context in zip(profiles, stats, contexts, strict=True)
        ]
        if any(len(shard_keys) and shard_keys.min() < 0 for shard_keys in keys):
            return None
        sizes = [int(shard_keys.max()) + 1 if len(shard_keys) else 0 for shard_keys in keys]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        state_span = 2 + max(
            (int(profile[columns.STATE].max()) for profile in profiles if len(profile)),
            default=0,
        )
        profile = _keyed(profiles, offsets, state_span)
        context = _keyed(contexts, offsets)
        tables = StoreTables.of(
            profile,
            StoreStats(
                by_store=_keyed([s.by_store for s in stats], offsets),
                by_weekday=_keyed([s.by_weekday for s in stats], offsets),
                cutoff=stats[0].cutoff,
            ),
        )
        if (tables.profile.positions([context[columns.STORE_ID].to_numpy()]) < 0).any():
            return None
        stores = np.fromiter(shard_of_store, dtype=np.int64, count=len(shard_of_store))
        order = np.argsort(stores)
        coding = [
            shard.series_codes_
            for shard in shards
            if getattr(shard, "series_codes_", None) is not None
        ]
        series = (
            pd.concat(coding, ignore_index=True)
            if coding
            else pd.DataFrame(
                {
                    columns.STORE_ID: np.empty(0, dtype=np.int64),
                    columns.PRODUCT_ID: np.empty(0, dtype=object),
                    _SERIES_CODE: np.empty(0, dtype=np.int64),
                }
            )
        )
        return cls(
            stores=stores[order],
            store_shards=np.fromiter(
                shard_of_store.values(), dtype=np.int64, count=len(shard_of_store)
            )[order],
            offsets=offsets,
            coded=np.array([getattr(shard, "series_codes_", None) is not None for shard in shards]),
            series=_series_index(series),
            series_codes=series[_SERIES_CODE].to_numpy(dtype=np.int64),
            tables=tables,
            context=_ContextDays.of(context, tables.profile),
            state_span=state_span,
        )

    def shard_of(self, store_ids: np.ndarray) -> np.ndarray:
        """Each store's shard, -1 for a store in none."""
        if not len(self.stores):
            return np.full(len(store_ids), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.stores, store_ids), len(self.stores) - 1)
        shard: np.ndarray = np.where(self.stores[at] == store_ids, self.store_shards[at], -1)
        return shard

    def predict(
        self,
        future: pd.DataFrame,
        shard_of_row: np.ndarray,
        shards: list[GlobalGBMForecaster],
        open_days_only: bool,
    ) -> np.ndarray | None:
        """`_predict_point` of a request whose rows' shards are `shard_of_row`; None for a
        request with a store its shard has no profile of (then predicted shard by shard).

        Raises:
            ValueError: A series its shard was not fitted on.
        """
        store_ids = future[columns.STORE_ID].to_numpy(dtype=np.int64)
        local = store_ids
        coded = self.coded[shard_of_row]
        if coded.any():
            position = self.series.get_indexer(
                pd.MultiIndex.from_arrays(
                    [store_ids[coded], future[columns.PRODUCT_ID].to_numpy()[coded]]
                )
            )
            if (position < 0).any():
                raise ValueError("gbm: a series the model was not fitted on")
            local = store_ids.copy()
            local[coded] = self.series_codes[position]
        keys = self.offsets[shard_of_row] + local
        if (self.tables.profile.positions([keys]) < 0).any():
            return None
        keyed = future.assign(**{columns.STORE_ID: keys})
        calendar = _request_calendar(self.context, keyed, self.tables.profile)
        predicted = _predicted_rows(future, open_days_only)
        if predicted is not None:
            keyed, local, shard_of_row = (
                keyed.take(predicted),
                local[predicted],
                shard_of_row[predicted],
            )
        features = feature_columns(keyed, self.tables, calendar)
        features[columns.STORE_ID] = local
        features[columns.STATE] = (
            np.asarray(features[columns.STATE], dtype=np.int64) - shard_of_row * self.state_span - 1
        )
        # Rows grouped by shard: each shard's boosters read a block of the matrices (a view)
        # instead of a copy gathered per shard.
        order = np.argsort(shard_of_row, kind="stable")
        deviation = np.empty(len(keyed))
        deviation[order] = _grouped_deviation(
            shards, shard_of_row[order], _FeatureMatrices(features, len(keyed), order)
        )
        sales = np.expm1(deviation + _baseline(features))
        return _spread(sales, predicted, len(future))


def _grouped_deviation(
    shards: list[GlobalGBMForecaster], shard_of_row: np.ndarray, matrices: _FeatureMatrices
) -> np.ndarray:
    """`_deviation` of feature rows grouped by shard (`shard_of_row` sorted), each group by
    its own shard's boosters.

    A request with many rows spreads the shards over the CPUs, one LightGBM thread each:
    at 100k series an every-store request is about 190 rows in each of 42 shards, too few
    per call for LightGBM's own threads to pay (so it ran its trees, most of its time, on
    one core), and a shard's boosters cost about 0.2 ms of CPU per call whatever the rows
    (their trees are read from memory). The forecasts do not depend on the threads.
    """
    bounds = np.flatnonzero(np.diff(shard_of_row)) + 1
    starts = np.concatenate([[0], bounds]).astype(int).tolist()
    ends = np.concatenate([bounds, [len(shard_of_row)]]).astype(int).tolist()
    groups = [
        (shards[int(shard_of_row[start])], start, end)
        for start, end in zip(starts, ends, strict=True)
        if end > start
    ]
    lanes = min(len(groups), _cpus()) if len(shard_of_row) >= _ONE_THREAD_ROWS else 1
    deviation = np.empty(len(shard_of_row))

    def block(start: int, end: int) -> Callable[[list[str]], np.ndarray]:
        return lambda names: matrices.of(names)[start:end]

    def predict(lane: list[tuple[GlobalGBMForecaster, int, int]]) -> None:
        for shard, start, end in lane:
            deviation[start:end] = shard._deviation(
                block(start, end), end - start, one_thread=True if lanes > 1 else None
            )

    if lanes <= 1:
        predict(groups)
        return deviation
    # Built before the lanes start, so that no two build one.
    for shard, _, _ in groups:
        for names in shard._feature_sets():
            matrices.of(names)
    # Consecutive groups of about equal rows per lane; this thread runs the first.
    share = np.cumsum([end - start for _, start, end in groups]) * lanes // len(shard_of_row)
    lane_of_group = np.minimum(np.concatenate([[0], share[:-1]]), lanes - 1)
    parts = [
        [group for group, lane in zip(groups, lane_of_group, strict=True) if lane == number]
        for number in range(lanes)
    ]
    with ThreadPoolExecutor(max_workers=lanes - 1) as pool:
        others = [pool.submit(predict, part) for part in parts[1:]]
        predict(parts[0])
        for other in others:
            other.result()
    return deviation


def _cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _keyed(
    frames: list[pd.DataFrame], offsets: np.ndarray, state_span: int | None = None
) -> pd.DataFrame:
    """Shards' frames as one, each shard's store ids moved by its offset (and, with
    `state_span`, its states by `shard * state_span + 1`); see `_ShardTables`."""
    parts = []
    for number, frame in enumerate(frames):
        moved = {
            columns.STORE_ID: frame[columns.STORE_ID].to_numpy(dtype=np.int64) + offsets[number]
        }
        if state_span is not None:
            moved[columns.STATE] = (
                frame[columns.STATE].to_numpy(dtype=np.int64) + number * state_span + 1
            )
        parts.append(frame.assign(**moved))
    return pd.concat(parts, ignore_index=True)


def _same_columns(frames: list[pd.DataFrame]) -> bool:
    """Whether the frames have the same columns with the same dtypes."""
    return all(frame.dtypes.equals(frames[0].dtypes) for frame in frames[1:])


@dataclass(frozen=True)
class _ContextDays:
    """A gbm's stored context as requests read it, built once per loaded model (not saved).

    Attributes:
        state_flags: `state_flags` of every context row, sorted by state and date.
        state_starts: Where each state's rows start in `state_flags` (states sorted).
        states: The states, in that order.
        stores: Each context row's store, sorted (stable: a store's rows keep their order).
        rows: `_CALENDAR_ROW_COLUMNS` of the context rows in the order of `stores`.
        carry: What the context's calendar passes on to later days: a request whose days
            all follow its stores' and states' context builds its calendar from its own
            rows and this alone.
    """

    state_flags: dict[str, np.ndarray]
    states: np.ndarray
    state_starts: np.ndarray
    stores: np.ndarray
    rows: dict[str, np.ndarray]
    carry: CalendarCarry

    @classmethod
    def of(cls, context: pd.DataFrame, profile: KeyedTable) -> _ContextDays:
        flags = state_flags(context, profile)
        state = flags[columns.STATE]
        states, state_starts = np.unique(state, return_index=True)
        order = np.argsort(context[columns.STORE_ID].to_numpy(), kind="stable")
        rows = {name: context[name].to_numpy()[order] for name in _CALENDAR_ROW_COLUMNS}
        carry = CalendarCarry.of(flags, rows)
        return cls(flags, states, state_starts, rows[columns.STORE_ID], rows, carry)

    def state_flags_of(self, states: np.ndarray) -> dict[str, np.ndarray]:
        """The context's flags of these states only (the others' calendars are not read)."""
        wanted = np.flatnonzero(np.isin(self.states, states))
        ends = np.append(self.state_starts[1:], len(self.state_flags[columns.STATE]))
        positions = _ranges(self.state_starts[wanted], ends[wanted])
        return {name: values[positions] for name, values in self.state_flags.items()}

    def store_rows(self, stores: np.ndarray) -> dict[str, np.ndarray]:
        """`_CALENDAR_ROW_COLUMNS` of these stores' context rows."""
        wanted = np.unique(stores)
        positions = _ranges(
            np.searchsorted(self.stores, wanted, side="left"),
            np.searchsorted(self.stores, wanted, side="right"),
        )
        return {name: values[positions] for name, values in self.rows.items()}


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The positions start..end-1 of each (start, end), concatenated."""
    lengths = ends - starts
    # Each position is its index in the result plus its range's shift.
    shifts = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    positions: np.ndarray = np.arange(int(lengths.sum())) + shifts
    return positions
