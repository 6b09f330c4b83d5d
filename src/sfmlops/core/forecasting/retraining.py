"""Single-store retrains: refit some series' own models inside an existing bundle.

The reference system's "retrain" button. The bundle's global model is refit only by full
training jobs; here the per-series models of the chosen series are backtested and refit on
their latest data, and each series' champion is re-chosen between those fresh per-series
models and the global model's score from the bundle. Every other series keeps its models,
so its forecasts stay identical. A retrain may name the models to choose among instead: a
per-series model the bundle lacks (Prophet in a bundle trained without it) is then added,
fitted on the retrained series only.

A series whose champion stays the global model (which only a full training refits) gets a
level correction instead: the factor on the global model's forecasts that fits the days since
the bundle was trained best (`level_factor`), so a store whose sales shifted is forecast at its
new level from the retrain on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.core.forecasting.backtest import (
    HORIZON_DAYS,
    BacktestWindow,
    backtest_windows,
    calibration_of,
    choose_champions,
    run_backtest,
)
from sfmlops.core.forecasting.base import (
    CalibratedForecaster,
    Forecaster,
    as_future,
    series_of,
)
from sfmlops.core.forecasting.bundle import (
    LEVEL_FACTOR,
    ForecastBundle,
    usual_open_weekdays,
    usual_promo_cycle,
)
from sfmlops.core.forecasting.executors import Executor
from sfmlops.core.forecasting.model_selection import (
    FINAL_FIT,
    FailureLog,
    Progress,
    factory_of,
    failed_series,
)
from sfmlops.core.forecasting.models import forecaster_class, make_forecaster, model_set

# Days the latest level rests on at least: a shorter segment is a bad day, not a shift.
MIN_LEVEL_DAYS = 2


class NotInBundleError(ValueError):
    """Series the bundle has no models for: only a full training job can add them."""


class GlobalModelNotInBundleError(ValueError):
    """A chosen global model the bundle lacks: only a full training job fits one."""


@dataclass(frozen=True)
class RetrainReport:
    """What a retrain did.

    Attributes:
        series: The retrained series.
        champions: Their new champion rows (as in `ForecastBundle.champions`).
        previous: Their champion rows before.
        levels: The level corrections of those whose champion is a global model
            (`store_id`, `product_id`, `level_factor`).
        failures: Fits that raised (`training.FAILURE_COLUMNS`); a series whose final fit
            failed keeps its previous model and champion.
    """

    series: list[tuple[int, str]]
    champions: pd.DataFrame
    previous: pd.DataFrame
    failures: pd.DataFrame
    levels: pd.DataFrame


def retrain_series(
    bundle: ForecastBundle,
    history: pd.DataFrame,
    stores: pd.DataFrame,
    *,
    models: Sequence[str] | None = None,
    executor: Executor | None = None,
    horizon_days: int = HORIZON_DAYS,
    progress: Progress | None = None,
) -> tuple[ForecastBundle, RetrainReport]:
    """A new bundle in which the series of `history` have refit per-series models.

    Args:
        bundle: The current champion bundle.
        history: Full sales history of the series to retrain (only those).
        stores: Their store metadata.
        models: The models these series' champions are chosen among; None: the bundle's.
            A chosen per-series model the bundle lacks (e.g. `prophet` in a bundle trained
            without it) is added, fitted on these series only and its intervals calibrated
            on their backtests; chosen global models compete with their recorded scores.

    Raises:
        NotInBundleError: A series of `history` is not in the bundle.
        GlobalModelNotInBundleError: A chosen global model the bundle lacks.
        UnknownModelError: A chosen name that is no model.
    """
    series = sorted(series_of(history))
    missing = sorted(set(series) - bundle.series)
    if missing:
        shown = ", ".join(f"store {store} product {product}" for store, product in missing)
        raise NotInBundleError(
            f"{shown}: not in the champion model; a full training job adds new series"
        )
    candidates, own = _retrained_models(bundle, models)
    windows = backtest_windows(
        pd.Timestamp(history[columns.SALES_DATE].max()),
        _rolling_windows(bundle.metadata),
        horizon_days,
    )
    failures = FailureLog()

    def on_fit(name: str, window: BacktestWindow) -> None:
        if progress:
            progress(f"backtest window {window.number}/{len(windows)}: fitting {name}")

    def on_fitted(name: str, window: BacktestWindow, forecaster: Forecaster) -> None:
        failures.add(name, f"backtest window {window.number}", forecaster)

    # Only global models to choose among (a gbm-only bundle): nothing to backtest, they
    # compete with their recorded scores.
    scored = (
        run_backtest(
            history,
            stores,
            {name: factory_of(name, executor) for name in own},
            windows,
            on_fit,
            on_fitted,
        )
        if own
        else pd.DataFrame()
    )
    fitted = dict(bundle.models)
    for name, model in own.items():
        if progress:
            progress(f"fitting {name} on the whole history")
        # A model new to the bundle is calibrated as a full job calibrates it: on its errors
        # in every rolling window (here of these series only).
        calibration = (
            model.calibration_
            if model is not None
            else calibration_of(scored[scored[columns.MODEL] == name])
        )
        fresh = make_forecaster(name, executor, calibration).fit(history, stores)
        failures.add(name, FINAL_FIT, fresh)
        # A series whose refit failed keeps its previous fit of this model.
        fresh.series_ -= failed_series(failures.frame())
        if model is not None:
            fitted[name] = model.with_series_of(fresh)
        elif fresh.series_:
            fitted[name] = fresh
    previous = _rows(bundle.champions, series)
    champions = _rechoose(bundle, scored, previous, failed_series(failures.frame()), candidates)
    all_champions = (
        pd.concat([_without(bundle.champions, series), champions], ignore_index=True)
        .sort_values([columns.STORE_ID, columns.PRODUCT_ID])
        .reset_index(drop=True)
    )
    levels = _levels(bundle, fitted, history, champions)
    kept_levels = [] if bundle.levels is None else [_without(bundle.levels, series)]
    all_levels = pd.concat(
        [frame for frame in [*kept_levels, levels] if len(frame)] or [levels],
        ignore_index=True,
    )
    retrained = ForecastBundle(
        fitted,
        all_champions,
        pd.concat(
            [_without(bundle.usual_open, series), usual_open_weekdays(history)], ignore_index=True
        ),
        bundle.last_date,
        {
            **bundle.metadata,
            "champion_mix": {
                str(k): int(v) for k, v in all_champions[columns.MODEL].value_counts().items()
            },
            "retrained_series": [[store, product] for store, product in series],
            "level_factors": [
                [int(row[columns.STORE_ID]), str(row[columns.PRODUCT_ID]), float(row[LEVEL_FACTOR])]
                for row in all_levels.to_dict(orient="records")
            ],
        },
        None
        if bundle.usual_promo is None
        else pd.concat(
            [_without(bundle.usual_promo, series), usual_promo_cycle(history)], ignore_index=True
        ),
        bundle.states,
        all_levels.sort_values([columns.STORE_ID, columns.PRODUCT_ID]).reset_index(drop=True)
        if len(all_levels)
        else None,
    )
    report = RetrainReport(series, champions, previous, failures.frame(), levels)
    return retrained, report


def _retrained_models(
    bundle: ForecastBundle, models: Sequence[str] | None
) -> tuple[list[str], dict[str, CalibratedForecaster | None]]:
    """The champion candidates, and the per-series models to refit (None: new to the bundle)."""
    if models is None:
        return list(bundle.models), {
            name: model
            for name, model in bundle.models.items()
            if isinstance(model, CalibratedForecaster) and model.per_series
        }
    candidates = list(model_set(models))
    lacking = [
        name
        for name in candidates
        if name not in bundle.models and not forecaster_class(name).per_series
    ]
    if lacking:
        raise GlobalModelNotInBundleError(
            f"the champion model has no {', '.join(lacking)}: a global model is fitted on "
            "every store at once, by a full training job only"
        )
    own = {
        name: cast(CalibratedForecaster | None, bundle.models.get(name))
        for name in candidates
        if forecaster_class(name).per_series
    }
    return candidates, own


def level_factor(yhat: np.ndarray, actual: np.ndarray) -> float | None:
    """The factor on forecasts `yhat` that fits the latest level of `actual` best.

    The days (in order, open days with sales) are split where the log ratio actual / forecast
    changes most (one change point, least squares; no split when none helps), and the factor
    is the one that minimises RMSPE over the days after it: sum(f/a) / sum((f/a)^2), as for
    the models' own scaling.

    Returns:
        None with fewer than `MIN_LEVEL_DAYS` days.
    """
    if len(yhat) < MIN_LEVEL_DAYS:
        return None
    log_ratio = np.log(actual / yhat)
    best, start = float(((log_ratio - log_ratio.mean()) ** 2).sum()), 0
    for split in range(1, len(log_ratio) - MIN_LEVEL_DAYS + 1):
        before, after = log_ratio[:split], log_ratio[split:]
        cost = float(((before - before.mean()) ** 2).sum() + ((after - after.mean()) ** 2).sum())
        if cost < best:
            best, start = cost, split
    ratio = yhat[start:] / actual[start:]
    return float(ratio.sum() / (ratio**2).sum())


def _levels(
    bundle: ForecastBundle,
    models: dict[str, Forecaster],
    history: pd.DataFrame,
    champions: pd.DataFrame,
) -> pd.DataFrame:
    """Level corrections of the series whose champion is a global model, from their days
    after the bundle's history (days that model never saw)."""
    later = history[
        (history[columns.SALES_DATE] > bundle.last_date)
        & (history[columns.OPEN] == 1)
        & (history[columns.SALES] > 0)
    ].sort_values(columns.SALES_DATE)
    rows = []
    for name, chosen in champions.groupby(columns.MODEL):
        model = models[str(name)]
        if _per_series(model):
            continue  # refit on the latest days just now: nothing out of sample to learn from
        keys = pd.MultiIndex.from_frame(later[[columns.STORE_ID, columns.PRODUCT_ID]])
        part = later[keys.isin(list(series_of(chosen)))].reset_index(drop=True)
        if part.empty:
            continue
        forecast = model.predict(as_future(part))
        part = part.assign(_yhat=forecast[columns.YHAT].to_numpy(dtype=float))
        part = part[part["_yhat"] > 0]
        for (store, product), days in part.groupby([columns.STORE_ID, columns.PRODUCT_ID]):
            factor = level_factor(
                days["_yhat"].to_numpy(), days[columns.SALES].to_numpy(dtype=float)
            )
            if factor is not None:
                rows.append(
                    {columns.STORE_ID: int(cast(int, store)), columns.PRODUCT_ID: str(product),
                     LEVEL_FACTOR: factor}
                )  # fmt: skip
    return pd.DataFrame(rows, columns=[columns.STORE_ID, columns.PRODUCT_ID, LEVEL_FACTOR])


def _rechoose(
    bundle: ForecastBundle,
    scored: pd.DataFrame,
    previous: pd.DataFrame,
    failed: set[tuple[int, str]],
    candidates: Sequence[str],
) -> pd.DataFrame:
    """New champion rows among `candidates`: fresh per-series scores against the global
    models' recorded ones."""
    recorded = previous.set_index([columns.STORE_ID, columns.PRODUCT_ID])
    fresh = pd.DataFrame(index=recorded.index)
    if not scored.empty:
        fresh = metrics.accuracy_by(
            scored, [columns.STORE_ID, columns.PRODUCT_ID, columns.MODEL]
        ).pivot_table(
            index=[columns.STORE_ID, columns.PRODUCT_ID],
            columns=columns.MODEL,
            values=metrics.RMSPE,
            dropna=False,
        )
    for name in candidates:
        column = f"{metrics.RMSPE}_{name}"
        if name in bundle.models and not _per_series(bundle.models[name]) and column in recorded:
            fresh[name] = recorded[column].reindex(fresh.index)
    champions = choose_champions(fresh, _best_overall(bundle, list(fresh.columns)))
    # A failed refit keeps the previous champion row as it was.
    keys = list(zip(champions[columns.STORE_ID], champions[columns.PRODUCT_ID], strict=True))
    kept = {
        (int(row[columns.STORE_ID]), str(row[columns.PRODUCT_ID])): row
        for row in previous.to_dict(orient="records")
    }
    rows = [
        kept[key] if key in failed else row
        for key, row in zip(keys, champions.to_dict(orient="records"), strict=True)
    ]
    return pd.DataFrame(rows, columns=list(champions.columns))


def _best_overall(bundle: ForecastBundle, candidates: list[str]) -> str:
    """The model with the lowest RMSPE over all series in the bundle's backtest."""
    reported = [
        row
        for row in bundle.metadata.get("reported_metrics", [])
        if row.get(columns.MODEL) in candidates and row.get(metrics.RMSPE) is not None
    ]
    if not reported:
        return candidates[0]
    return str(min(reported, key=lambda row: row[metrics.RMSPE])[columns.MODEL])


def _rows(frame: pd.DataFrame, series: list[tuple[int, str]]) -> pd.DataFrame:
    keys = pd.MultiIndex.from_frame(frame[[columns.STORE_ID, columns.PRODUCT_ID]])
    return frame[keys.isin(series)].reset_index(drop=True)


def _without(frame: pd.DataFrame, series: list[tuple[int, str]]) -> pd.DataFrame:
    keys = pd.MultiIndex.from_frame(frame[[columns.STORE_ID, columns.PRODUCT_ID]])
    return frame[~keys.isin(series)]


def _per_series(model: Forecaster) -> bool:
    return isinstance(model, CalibratedForecaster) and model.per_series


def _rolling_windows(metadata: dict[str, Any]) -> int:
    """The rolling windows the bundle was backtested on (3 for bundles that don't say)."""
    if "rolling_windows" in metadata:
        return int(metadata["rolling_windows"])
    return len(metadata.get("backtest_windows", [])) or 3
