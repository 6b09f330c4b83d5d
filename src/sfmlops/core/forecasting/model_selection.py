"""Backtest, pick champions, fit on everything: the training pipeline behind `sfmlops train`.

Pure: frames in, a bundle and report frames out. Where fits run is the injected executor's
business: a global model is one task, per-series models fan out in chunks of series.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np
import pandas as pd

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.core.forecasting.backtest import (
    HORIZON_DAYS,
    ROLLING,
    SEASON_WINDOWS,
    BacktestWindow,
    ForecasterFactory,
    backtest_windows,
    calibration_of,
    champion_scored,
    run_backtest,
    select_champions,
    summary,
)
from sfmlops.core.forecasting.base import (
    CalibratedForecaster,
    Forecaster,
    IntervalCalibration,
    series_of,
)
from sfmlops.core.forecasting.bundle import (
    ForecastBundle,
    store_states,
    usual_open_weekdays,
    usual_promo_cycle,
)
from sfmlops.core.forecasting.executors import Executor, SequentialExecutor
from sfmlops.core.forecasting.models import forecaster_class, make_forecaster

Progress = Callable[[str], None]
# A new version becomes champion unless its backtest RMSPE is worse by more than this
# (relative): retrains on newer data are preferred unless clearly worse.
PROMOTION_TOLERANCE = 0.02
# A job whose final fits fail for more than this share of series registers nothing.
MAX_FAILED_SHARE = 0.05
FAILURE_STAGE = "stage"  # `backtest window N` or `final fit`
FAILURE_ERROR = "error"
FAILURE_COLUMNS = (
    columns.STORE_ID,
    columns.PRODUCT_ID,
    columns.MODEL,
    FAILURE_STAGE,
    FAILURE_ERROR,
)
FINAL_FIT = "final fit"


class FailureLog:
    """Per-series fit failures as they happen (a series' failure never fails the others)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, str, str, str]] = []

    def add(self, model: str, stage: str, forecaster: Forecaster) -> None:
        """Record the failures a fitted forecaster lists in `failures_`."""
        for (store_id, product_id), error in getattr(forecaster, "failures_", {}).items():
            self.rows.append((store_id, product_id, model, stage, error))

    def frame(self) -> pd.DataFrame:
        """One row per failed fit: `FAILURE_COLUMNS`."""
        return pd.DataFrame(self.rows, columns=list(FAILURE_COLUMNS)).astype(
            {columns.STORE_ID: "int64", columns.PRODUCT_ID: str}
        )


def failed_series(failures: pd.DataFrame) -> set[tuple[int, str]]:
    """The series that lost a final model to a failed fit."""
    final = failures[failures[FAILURE_STAGE] == FINAL_FIT]
    return series_of(final) if not final.empty else set()


@dataclass(frozen=True)
class BacktestReport:
    """What a backtest found.

    Attributes:
        windows: The windows, oldest first; the last (a rolling one) is the reported one.
        scored: Every model's forecasts with actuals (see `backtest.run_backtest`), plus the
            champions' forecasts on the reported window as model `champion`.
        summary: Metrics per model and window (`champion` only on the reported window).
        champions: Per series, the champion picked on the rolling windows before the
            reported one (on the only rolling window when there is one).
        failures: Fits that raised for a series (`FAILURE_COLUMNS`); such a series is
            forecast 0 by that model in that window, so it does not become its champion.
        stand_ins: Per model whose backtest fitted a stand-in in its place (e.g. the default
            gbm: one cheaper booster for a blend of two), what the stand-in is: that model's
            figures here are the stand-in's, not those of the model a training serves.
    """

    windows: list[BacktestWindow]  # rolling and season windows, oldest first
    scored: pd.DataFrame
    summary: pd.DataFrame
    champions: pd.DataFrame
    failures: pd.DataFrame = field(default_factory=lambda: FailureLog().frame())
    stand_ins: dict[str, str] = field(default_factory=dict)

    @property
    def reported_window(self) -> int:
        """The number of the window the champions were not selected on."""
        return self.windows[-1].number

    def reported(self) -> pd.DataFrame:
        """The summary rows of the reported window, best RMSPE first."""
        rows = self.summary[self.summary[columns.BACKTEST_WINDOW] == self.reported_window]
        return rows.sort_values(metrics.RMSPE).reset_index(drop=True)

    def champion_mix(self) -> dict[str, int]:
        """How many series each model is champion of."""
        counts = self.champions[columns.MODEL].value_counts()
        return {str(name): int(count) for name, count in counts.items()}


def backtest(
    history: pd.DataFrame,
    stores: pd.DataFrame,
    model_names: Sequence[str],
    *,
    windows: int = 3,
    season_windows: int = SEASON_WINDOWS,
    executor: Executor | None = None,
    horizon_days: int = HORIZON_DAYS,
    progress: Progress | None = None,
    factories: Mapping[str, ForecasterFactory] | None = None,
    shard_series: int | None = None,
) -> BacktestReport:
    """Rolling and season backtest of the models, champions picked on the earlier windows.

    `factories` makes models configured otherwise than by default (benchmarks, tuning): a
    name there need not be a registered model. `shard_series` is the gbm's most series per
    booster (`models.make_forecaster`) for the models not in `factories`.
    """
    factories = factories or {}
    for name in model_names:
        if name not in factories:
            forecaster_class(name)  # fail on a bad name before any fit
    chosen = backtest_windows(
        pd.Timestamp(history[columns.SALES_DATE].max()),
        windows,
        horizon_days,
        season_windows,
        pd.Timestamp(history[columns.SALES_DATE].min()),
    )
    made = {
        name: factories.get(name) or factory_of(name, executor, shard_series)
        for name in model_names
    }

    def on_fit(name: str, window: BacktestWindow) -> None:
        if progress:
            progress(f"backtest window {window.number}/{len(chosen)}: fitting {name}")

    failures = FailureLog()

    def on_fitted(name: str, window: BacktestWindow, forecaster: Forecaster) -> None:
        failures.add(name, f"backtest window {window.number}", forecaster)

    scored = run_backtest(history, stores, made, chosen, on_fit, on_fitted)
    # Season windows are reported, not used for picking: their models saw a year less
    # history than the final one (on data to 2014-06-13, the gbm of the season window had five
    # months and lost stores to seasonal_naive that it wins with the full history).
    rolling = [w.number for w in chosen if w.kind == ROLLING]
    selection = rolling[:-1] or [rolling[-1]]
    champions = select_champions(scored, selection)
    reported = chosen[-1].number
    best = champion_scored(scored[scored[columns.BACKTEST_WINDOW] == reported], champions)
    scored = pd.concat([scored, best], ignore_index=True)
    return BacktestReport(
        chosen, scored, summary(scored, chosen), champions, failures.frame(), stand_ins_of(made)
    )


def stand_ins_of(factories: Mapping[str, ForecasterFactory]) -> dict[str, str]:
    """Per model whose backtest windows fit a stand-in in its place, what the stand-in is."""
    found = {}
    for name, make in factories.items():
        forecaster = make()  # unfitted: cheap
        if isinstance(forecaster, CalibratedForecaster):
            description = forecaster.stand_in_description()
            if description:
                found[name] = description
    return found


def train(
    history: pd.DataFrame,
    stores: pd.DataFrame,
    model_names: Sequence[str],
    *,
    windows: int = 3,
    season_windows: int = SEASON_WINDOWS,
    executor: Executor | None = None,
    horizon_days: int = HORIZON_DAYS,
    progress: Progress | None = None,
    factories: Mapping[str, ForecasterFactory] | None = None,
    shard_series: int | None = None,
) -> tuple[ForecastBundle, BacktestReport]:
    """Backtest the models, then fit each on the whole history and bundle the champions.

    `shard_series`: the gbm's most series per booster (`models.make_forecaster`; None: its
    default), in the backtest windows and the final fit alike.

    The bundle's champions are picked on all backtest windows (the most evidence); the
    report's figures are those of picking on the earlier windows and scoring the last.
    Final models take their intervals from their backtest errors (conformal), so no model
    is fitted twice on the full history. A series whose champion's final fit failed gets
    its best other model (see `avoid_failed`); the report lists every failure.
    """
    report = backtest(
        history,
        stores,
        model_names,
        windows=windows,
        season_windows=season_windows,
        executor=executor,
        horizon_days=horizon_days,
        progress=progress,
        factories=factories,
        shard_series=shard_series,
    )
    executor = executor or SequentialExecutor()
    rolling = [w.number for w in report.windows if w.kind == ROLLING]
    failures = FailureLog()
    models: dict[str, CalibratedForecaster] = {}
    for name in model_names:
        # Every rolling window's errors: the final fit is calibrated on the most evidence of
        # models fitted on about as much history as it is. A season window's model saw a
        # year less: its errors are larger than the final model's and would widen intervals
        # beyond their level (measured: 84 % instead of 78 % coverage of a nominal 80 %).
        scored = report.scored
        calibration = calibration_of(
            scored[(scored[columns.MODEL] == name) & scored[columns.BACKTEST_WINDOW].isin(rolling)]
        )
        make = (factories or {}).get(name)
        forecaster = (
            cast(CalibratedForecaster, make(calibration=calibration))
            if make is not None
            else make_forecaster(name, executor, calibration, shard_series=shard_series)
        )
        if progress:
            progress(f"fitting {name} on the whole history")
        if forecaster.fans_out_on(history):
            models[name] = forecaster.fit(history, stores)  # fans out over the executor
        else:
            models[name] = executor.map(fit_task, [(forecaster, history, stores)])[0]
        failures.add(name, FINAL_FIT, models[name])
    report = replace(report, failures=pd.concat([report.failures, failures.frame()]))
    all_windows = [w.number for w in report.windows if w.kind == ROLLING]
    champions = avoid_failed(select_champions(report.scored, all_windows), failures.frame())
    reported = report.reported()
    bundle = ForecastBundle(
        models,
        champions,
        usual_open_weekdays(history),
        pd.Timestamp(history[columns.SALES_DATE].max()),
        {
            "backtest_windows": [
                {
                    "number": w.number,
                    "start": w.start.date().isoformat(),
                    "end": w.end.date().isoformat(),
                    "kind": w.kind,
                }
                for w in report.windows
            ],
            "rolling_windows": sum(w.kind == ROLLING for w in report.windows),
            "reported_window": report.reported_window,
            "reported_metrics": reported.to_dict(orient="records"),
            "window_metrics": window_metrics(report),
            # Whose errors the figures above are, where a backtest fitted a stand-in.
            "backtest_stand_ins": dict(report.stand_ins),
            "champion_mix": {
                str(k): int(v) for k, v in champions[columns.MODEL].value_counts().items()
            },
            "horizon_days": horizon_days,
        },
        usual_promo_cycle(history),
        store_states(stores),
    )
    return bundle, report


def window_metrics(report: BacktestReport) -> list[dict[str, object]]:
    """Per model and window: the window's number, kind and days, RMSPE, bias, coverage."""
    described = {w.number: w for w in report.windows}
    rows = []
    for record in report.summary.to_dict(orient="records"):
        window = described[int(record[columns.BACKTEST_WINDOW])]
        rows.append(
            {
                columns.MODEL: str(record[columns.MODEL]),
                columns.BACKTEST_WINDOW: window.number,
                "kind": window.kind,
                "start": window.start.date().isoformat(),
                "end": window.end.date().isoformat(),
                **{name: float(record[name]) for name in (*metrics.REPORTED, metrics.DAYS)},
            }
        )
    return rows


def avoid_failed(champions: pd.DataFrame, failures: pd.DataFrame) -> pd.DataFrame:
    """Give each series whose champion's final fit failed its best model that did not fail.

    Args:
        champions: From `select_champions` (with the `rmspe_<model>` columns).
        failures: Final-fit failures (`FAILURE_COLUMNS`).
    """
    if failures.empty:
        return champions
    failed = set(
        zip(
            failures[columns.STORE_ID].astype(int),
            failures[columns.PRODUCT_ID].astype(str),
            failures[columns.MODEL].astype(str),
            strict=True,
        )
    )
    champions = champions.copy()
    scores = [name for name in champions.columns if name.startswith(f"{metrics.RMSPE}_")]
    for position, row in champions.iterrows():
        key = (int(row[columns.STORE_ID]), str(row[columns.PRODUCT_ID]))
        if (*key, str(row[columns.MODEL])) not in failed:
            continue
        options = {
            column.removeprefix(f"{metrics.RMSPE}_"): float(row[column])
            for column in scores
            if (*key, column.removeprefix(f"{metrics.RMSPE}_")) not in failed
        }
        if options:
            # A model without a score for the series (NaN) is the last resort.
            best = min(options, key=lambda name: np.nan_to_num(options[name], nan=np.inf))
            champions.loc[position, columns.MODEL] = best
            champions.loc[position, metrics.RMSPE] = options[best]
    return champions


def fit_task(task: tuple[CalibratedForecaster, pd.DataFrame, pd.DataFrame]) -> CalibratedForecaster:
    """Fit one forecaster on (history, stores): a picklable task for executors."""
    forecaster, history, stores = task
    return forecaster.fit(history, stores)


def factory_of(
    name: str, executor: Executor | None, shard_series: int | None = None
) -> ForecasterFactory:
    """A factory of unfitted `name` forecasters (what backtests fit once per window)."""

    def make(*, calibration: IntervalCalibration | None = None) -> CalibratedForecaster:
        return make_forecaster(name, executor, calibration, shard_series=shard_series)

    return make
