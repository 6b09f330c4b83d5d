"""Single-store retrains: refit some series' own models inside an existing bundle.

The reference system's "retrain" button. The bundle's global model is refit only by full
training jobs; here the per-series models of the chosen series are backtested and refit on
their latest data, and each series' champion is re-chosen between those fresh per-series
models and the global model's score from the bundle. Every other series keeps its models,
so its forecasts stay identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.core.forecasting.backtest import (
    HORIZON_DAYS,
    BacktestWindow,
    backtest_windows,
    choose_champions,
    run_backtest,
)
from sfmlops.core.forecasting.base import CalibratedForecaster, Forecaster, series_of
from sfmlops.core.forecasting.bundle import (
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
from sfmlops.core.forecasting.models import make_forecaster


class NotInBundleError(ValueError):
    """Series the bundle has no models for: only a full training job can add them."""


@dataclass(frozen=True)
class RetrainReport:
    """What a retrain did.

    Attributes:
        series: The retrained series.
        champions: Their new champion rows (as in `ForecastBundle.champions`).
        previous: Their champion rows before.
        failures: Fits that raised (`training.FAILURE_COLUMNS`); a series whose final fit
            failed keeps its previous model and champion.
    """

    series: list[tuple[int, str]]
    champions: pd.DataFrame
    previous: pd.DataFrame
    failures: pd.DataFrame


def retrain_series(
    bundle: ForecastBundle,
    history: pd.DataFrame,
    stores: pd.DataFrame,
    *,
    executor: Executor | None = None,
    horizon_days: int = HORIZON_DAYS,
    progress: Progress | None = None,
) -> tuple[ForecastBundle, RetrainReport]:
    """A new bundle in which the series of `history` have refit per-series models.

    Args:
        bundle: The current champion bundle.
        history: Full sales history of the series to retrain (only those).
        stores: Their store metadata.

    Raises:
        NotInBundleError: A series of `history` is not in the bundle.
    """
    series = sorted(series_of(history))
    missing = sorted(set(series) - bundle.series)
    if missing:
        shown = ", ".join(f"store {store} product {product}" for store, product in missing)
        raise NotInBundleError(
            f"{shown}: not in the champion model; a full training job adds new series"
        )
    own = {
        name: model
        for name, model in bundle.models.items()
        if isinstance(model, CalibratedForecaster) and model.per_series
    }
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

    scored = run_backtest(
        history,
        stores,
        {name: factory_of(name, executor) for name in own},
        windows,
        on_fit,
        on_fitted,
    )
    models = dict(bundle.models)
    for name, model in own.items():
        if progress:
            progress(f"fitting {name} on the whole history")
        fresh = make_forecaster(name, executor, model.calibration_).fit(history, stores)
        failures.add(name, FINAL_FIT, fresh)
        # A series whose refit failed keeps its previous fit of this model.
        fresh.series_ -= failed_series(failures.frame())
        models[name] = model.with_series_of(fresh)
    previous = _rows(bundle.champions, series)
    champions = _rechoose(bundle, scored, previous, failed_series(failures.frame()))
    all_champions = (
        pd.concat([_without(bundle.champions, series), champions], ignore_index=True)
        .sort_values([columns.STORE_ID, columns.PRODUCT_ID])
        .reset_index(drop=True)
    )
    retrained = ForecastBundle(
        models,
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
        },
        None
        if bundle.usual_promo is None
        else pd.concat(
            [_without(bundle.usual_promo, series), usual_promo_cycle(history)], ignore_index=True
        ),
        bundle.states,
    )
    report = RetrainReport(series, champions, previous, failures.frame())
    return retrained, report


def _rechoose(
    bundle: ForecastBundle,
    scored: pd.DataFrame,
    previous: pd.DataFrame,
    failed: set[tuple[int, str]],
) -> pd.DataFrame:
    """New champion rows: fresh per-series scores against the global models' recorded ones."""
    fresh = metrics.accuracy_by(
        scored, [columns.STORE_ID, columns.PRODUCT_ID, columns.MODEL]
    ).pivot_table(
        index=[columns.STORE_ID, columns.PRODUCT_ID],
        columns=columns.MODEL,
        values=metrics.RMSPE,
        dropna=False,
    )
    recorded = previous.set_index([columns.STORE_ID, columns.PRODUCT_ID])
    for name, model in bundle.models.items():
        column = f"{metrics.RMSPE}_{name}"
        if not _per_series(model) and column in recorded:
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
