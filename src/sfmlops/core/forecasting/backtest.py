"""Rolling-origin and season backtests, and per-series champion selection.

Rolling windows of `horizon_days` days end at the data's last day. Season windows forecast
the same days of the year as the forecast that follows the data, one year earlier: the
weeks just before the data's end are often an easier season (e.g. no summer holidays) than
the weeks after it. Windows are numbered oldest first. Champions are picked on every window
but the last rolling one and scored on that one, so the reported figure is not the one the
selection saw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.core.forecasting.base import (
    INTERVAL_QUANTILES,
    CalibratedForecaster,
    Forecaster,
    IntervalCalibration,
    as_future,
    forecast_frame,
    horizon_of,
    series_index,
)

HORIZON_DAYS = 48  # the competition's forecast horizon
SEASON_WINDOWS = 1  # season windows a backtest adds by default (see `backtest_windows`)
ROLLING = "rolling"
SEASON = "season"
# A season window needs this many windows' worth of history before its cutoff (one to fit,
# one to calibrate on), or it is left out.
SEASON_MIN_HISTORY_WINDOWS = 2
CHAMPION_MARGIN = 0.3  # see `select_champions`
POINT_SCALE = "point_scale"  # the factor a model applied to its point forecasts


class ForecasterFactory(Protocol):
    """Makes an unfitted forecaster; with a calibration, it takes its intervals from it."""

    def __call__(self, *, calibration: IntervalCalibration | None = None) -> Forecaster: ...


@dataclass(frozen=True)
class BacktestWindow:
    """One forecast origin: fit on days <= `cutoff`, forecast `start`..`end` (inclusive)."""

    number: int  # 1 = oldest
    cutoff: pd.Timestamp
    start: pd.Timestamp
    end: pd.Timestamp
    kind: str = ROLLING  # `ROLLING` or `SEASON`

    def describe(self) -> str:
        """E.g. `season 2014-06-14..2014-07-31`."""
        return f"{self.kind} {self.start.date().isoformat()}..{self.end.date().isoformat()}"


def backtest_windows(
    last_date: pd.Timestamp,
    windows: int = 3,
    horizon_days: int = HORIZON_DAYS,
    season_windows: int = 0,
    first_date: pd.Timestamp | None = None,
) -> list[BacktestWindow]:
    """Rolling and season windows of `horizon_days` days, numbered oldest first.

    Args:
        last_date: The data's last day; the last rolling window ends on it.
        windows: Consecutive rolling windows.
        horizon_days: Days per window.
        season_windows: Consecutive windows starting one year before the day after
            `last_date`: the first forecasts the days of the year the next forecast will,
            a year earlier; the next ones follow it.
        first_date: The data's first day; a season window with less than
            `SEASON_MIN_HISTORY_WINDOWS` windows of history before it, or overlapping a rolling
            window, is left out.
    """
    if windows < 1:
        raise ValueError(f"need at least one backtest window, got {windows}")
    if season_windows < 0:
        raise ValueError(f"season windows cannot be negative, got {season_windows}")
    last = pd.Timestamp(last_date)
    length = pd.Timedelta(days=horizon_days)
    found = []
    for position in range(windows):
        end = last - length * (windows - 1 - position)
        found.append((end - length, ROLLING))
    rolling_start = found[0][0] + pd.Timedelta(days=1)
    season_start = last + pd.Timedelta(days=1) - pd.DateOffset(years=1)
    for position in range(season_windows):
        cutoff = season_start + length * position - pd.Timedelta(days=1)
        enough = (
            first_date is None
            or cutoff - pd.Timestamp(first_date) >= length * SEASON_MIN_HISTORY_WINDOWS
        )
        if enough and cutoff + length < rolling_start:
            found.append((cutoff, SEASON))
    return [
        BacktestWindow(number, cutoff, cutoff + pd.Timedelta(days=1), cutoff + length, kind)
        for number, (cutoff, kind) in enumerate(sorted(found), start=1)
    ]


def run_backtest(
    history: pd.DataFrame,
    stores: pd.DataFrame,
    models: Mapping[str, ForecasterFactory],
    windows: Sequence[BacktestWindow],
    on_fit: Callable[[str, BacktestWindow], None] | None = None,
    on_fitted: Callable[[str, BacktestWindow, Forecaster], None] | None = None,
) -> pd.DataFrame:
    """Fit every model at every window's cutoff and forecast the window.

    Args:
        history: Canonical sales history covering the windows.
        stores: Store metadata.
        models: Model name -> factory of an unfitted forecaster.
        windows: From `backtest_windows`.
        on_fit: Called before each fit (for progress output).
        on_fitted: Called with each fitted forecaster (e.g. to collect per-series failures).

    Returns:
        Scored forecasts: `model`, `backtest_window`, `cutoff`, `horizon_days`,
        `columns.FORECAST_COLUMNS`, `open`, `actual` (sales) and `point_scale`, for every
        day of every window; the interval columns are NaN where the window's model had no
        calibration (too little history before its cutoff). A season window with no window
        just before it carries the calibration of the rolling windows' errors, as the
        served model does.
    """
    parts: list[pd.DataFrame] = []
    previous: BacktestWindow | None = None
    previous_rows: dict[str, pd.DataFrame] = {}
    # Season windows calibrated on the rolling windows' errors once those are scored.
    deferred: list[tuple[int, str, BacktestWindow]] = []
    has_rolling = any(window.kind == ROLLING for window in windows)
    # A series launched after a window's cutoff has nothing to be fitted on there: the window
    # forecasts the series with history up to its cutoff only (synthetic products start late;
    # every bundled store has sales from the data's first day).
    first_day = history.groupby([columns.STORE_ID, columns.PRODUCT_ID], observed=True)[
        columns.SALES_DATE
    ].min()
    for window in windows:
        seen = history[history[columns.SALES_DATE] <= window.cutoff]
        if seen.empty:
            raise ValueError(f"backtest window {window.number}: no history up to {window.cutoff}")
        inside = history[
            (history[columns.SALES_DATE] >= window.start)
            & (history[columns.SALES_DATE] <= window.end)
        ]
        target = inside[
            series_index(inside).isin(first_day.index[first_day <= window.cutoff])
        ].reset_index(drop=True)
        future = as_future(target)
        # The window just before this one is exactly what a calibration probe would forecast
        # (the days before the cutoff, by a model fitted without them), with the real model
        # instead of a cheaper probe: its errors calibrate this window for free.
        follows = previous is not None and previous.end == window.cutoff
        # A season window is reported, never used for champions or the served model's
        # calibration: instead of a probe of its own (a fit on its history minus 48 days,
        # 6.5-7.9 CPU s of a 1,115-store training job; docs/benchmarks.md) it is calibrated
        # as the served model is, on the rolling windows' errors, which also says whether
        # the served model's intervals hold in the season.
        defer = window.kind == SEASON and not follows and has_rolling
        for name, factory in models.items():
            if on_fit:
                on_fit(name, window)
            calibration = calibration_of(previous_rows[name]) if follows else None
            if defer:
                calibration = UNCALIBRATED
                deferred.append((len(parts), name, window))
            forecaster = factory(calibration=calibration)
            if isinstance(forecaster, CalibratedForecaster):
                forecaster = forecaster.backtest_stand_in()
            forecaster = forecaster.fit(seen, stores)
            if on_fitted:
                on_fitted(name, window, forecaster)
            forecast = forecaster.predict(future)
            forecast.insert(0, columns.MODEL, name)
            forecast.insert(1, columns.BACKTEST_WINDOW, window.number)
            forecast[columns.CUTOFF] = window.cutoff
            forecast[columns.HORIZON_DAYS] = horizon_of(forecast[columns.SALES_DATE], window.cutoff)
            forecast[columns.OPEN] = future[columns.OPEN].to_numpy()
            forecast[metrics.ACTUAL] = target[columns.SALES].to_numpy(dtype=float)
            fitted = getattr(forecaster, "calibration_", None)
            forecast[POINT_SCALE] = fitted.scale if fitted is not None else 1.0
            if fitted is None:
                # Fitted on too little history to calibrate on (a first window with at most
                # twice the model's calibration days before it), its intervals collapse onto
                # the point forecast: no interval at all, so the window has no coverage to
                # report rather than a coverage of 0 %.
                forecast[[column for column, _ in INTERVAL_QUANTILES]] = np.nan
            parts.append(forecast)
            previous_rows[name] = forecast
        previous = window
    scored = pd.concat(parts, ignore_index=True)
    rolling = scored[columns.BACKTEST_WINDOW].isin(
        [window.number for window in windows if window.kind == ROLLING]
    )
    for position, name, window in deferred:
        errors = scored[rolling & (scored[columns.MODEL] == name)]
        parts[position] = recalibrated(parts[position], calibration_of(errors), window.cutoff)
    return pd.concat(parts, ignore_index=True) if deferred else scored


# Passed to a model whose window is calibrated later (`recalibrated`): it skips the probe.
UNCALIBRATED = IntervalCalibration(
    horizons=np.array([1]), quantiles={column: np.zeros(1) for column, _ in INTERVAL_QUANTILES}
)


def recalibrated(
    scored: pd.DataFrame, calibration: IntervalCalibration, cutoff: pd.Timestamp
) -> pd.DataFrame:
    """One window's scored forecasts (`run_backtest`, fitted at `cutoff`) as if their model
    had carried this calibration: its RMSPE factor and intervals on the raw point forecasts."""
    raw = scored[columns.YHAT].to_numpy(dtype=float) / scored[POINT_SCALE].to_numpy(dtype=float)
    framed = forecast_frame(scored, raw, calibration, cutoff)
    return scored.assign(
        **{column: framed[column].to_numpy() for column in columns.FORECAST_VALUES},
        **{POINT_SCALE: calibration.scale},
    )


def calibration_of(scored: pd.DataFrame) -> IntervalCalibration:
    """Intervals and the RMSPE factor learnt from one model's scored out-of-sample rows.

    The factor each row's forecast already carried (`POINT_SCALE`) is undone first, so the
    new factor is learnt from the model's raw forecasts. Rows of several windows give each
    interval quantile as the median of the windows' own (`IntervalCalibration.of_scored`).
    """
    return IntervalCalibration.of_scored(
        scored[columns.YHAT].to_numpy(dtype=float) / scored[POINT_SCALE].to_numpy(dtype=float),
        scored[metrics.ACTUAL].to_numpy(dtype=float),
        scored[columns.HORIZON_DAYS].to_numpy(),
        rescale=True,
        windows=scored[columns.BACKTEST_WINDOW].to_numpy(),
    )


def summary(scored: pd.DataFrame, windows: Sequence[BacktestWindow] = ()) -> pd.DataFrame:
    """Overall metrics per model and window (one row each), with each window's kind and days."""
    table = metrics.accuracy_by(scored, [columns.MODEL, columns.BACKTEST_WINDOW])
    if windows:
        described = {w.number: w for w in windows}
        table[WINDOW_KIND] = table[columns.BACKTEST_WINDOW].map(lambda n: described[n].kind)
        table[WINDOW_START] = table[columns.BACKTEST_WINDOW].map(lambda n: described[n].start)
        table[WINDOW_END] = table[columns.BACKTEST_WINDOW].map(lambda n: described[n].end)
    return table


def select_champions(
    scored: pd.DataFrame, selection_windows: Sequence[int], margin: float = CHAMPION_MARGIN
) -> pd.DataFrame:
    """Per series, the model with the lowest RMSPE over the selection windows.

    The model best over all series stays a series' champion unless another model beats it
    there by more than `margin` (relative RMSPE): two windows of one store are few days, and
    switching on small differences picks noise (measured: on 50 stores, plain per-store
    minimum scored 0.102 on the next window where the best overall model alone scored 0.097).
    0.3 rather than 0.1 (until 2026-12-06): the stores a margin of 0.1 handed to
    `seasonal_naive` made every window measured worse or left it unchanged (all 1,115 stores:
    the season window 2014-06-14..07-31 0.1076 against 0.1062, its training's reported window
    0.1133 against 0.1117; docs/benchmarks.md, "A cheaper second booster, and the champion
    margin").

    Returns:
        One row per series: `store_id`, `product_id`, `model` (the champion), `rmspe` of the
        champion on the selection windows, and `rmspe_<model>` for every model compared.
        A series without sales in the selection windows gets the model best overall.
        Rows of model `champion` (`champion_scored`) are no candidate.
    """
    # Only what RMSPE reads, and never the champions' own rows (`champion_scored`): a copy of
    # every column of a 100k-series backtest (29 M rows) and all nine metrics per row took
    # the default training's peak from 12 to 19 GiB (docs/benchmarks.md).
    chosen = scored.loc[
        scored[columns.BACKTEST_WINDOW].isin(list(selection_windows))
        & (scored[columns.MODEL] != CHAMPION),
        [columns.STORE_ID, columns.PRODUCT_ID, columns.MODEL, metrics.ACTUAL, columns.YHAT],
    ]
    per_series = metrics.rmspe_by(chosen, [columns.STORE_ID, columns.PRODUCT_ID, columns.MODEL])
    wide = per_series.pivot_table(
        index=[columns.STORE_ID, columns.PRODUCT_ID],
        columns=columns.MODEL,
        values=metrics.RMSPE,
        dropna=False,
    )
    overall = metrics.rmspe_by(chosen, [columns.MODEL]).set_index(columns.MODEL)[metrics.RMSPE]
    return choose_champions(wide, str(overall.idxmin()), margin)


def choose_champions(
    rmspe_by_model: pd.DataFrame, fallback: str, margin: float = CHAMPION_MARGIN
) -> pd.DataFrame:
    """Per series, `fallback` unless another model's RMSPE is lower by more than `margin`.

    Args:
        rmspe_by_model: Indexed by (`store_id`, `product_id`), one RMSPE column per model
            (NaN where a model has no score for a series).
        fallback: The model best over all series.

    Returns:
        As `select_champions`.
    """
    ordered = [fallback, *[name for name in rmspe_by_model.columns if name != fallback]]
    wide = rmspe_by_model[ordered]
    filled = wide.fillna(np.inf)
    best = filled.min(axis=1)
    switch = best < (1 - margin) * filled[fallback]
    champion = filled.idxmin(axis=1).where(switch & np.isfinite(best), fallback)
    champion_rmspe = pd.Series(
        [filled.at[key, name] for key, name in champion.items()], index=champion.index
    )
    champions = pd.DataFrame(
        {columns.MODEL: champion, metrics.RMSPE: champion_rmspe.replace(np.inf, np.nan)}
    )
    for name in wide.columns:
        champions[f"{metrics.RMSPE}_{name}"] = wide[name]
    return champions.reset_index()


def champion_scored(scored: pd.DataFrame, champions: pd.DataFrame) -> pd.DataFrame:
    """The scored rows of each series' champion, labelled as model `champion`."""
    chosen = scored.merge(
        champions[[columns.STORE_ID, columns.PRODUCT_ID, columns.MODEL]],
        on=[columns.STORE_ID, columns.PRODUCT_ID, columns.MODEL],
        how="inner",
    )
    return chosen.assign(**{columns.MODEL: CHAMPION})


CHAMPION = "champion"
WINDOW_KIND = "window_kind"
WINDOW_START = "window_start"
WINDOW_END = "window_end"
