"""What every forecaster shares: the interface, prediction intervals, closed days, save/load.

A forecaster is configured by its constructor, learns in `fit(history, stores)` (canonical
sales and store frames) and answers `predict(future)` for covariate rows
(`columns.FUTURE_COLUMNS`) with `columns.FORECAST_COLUMNS`. Closed days forecast 0.
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd

from sfmlops.core import columns

FORECASTER_FILE = "forecaster.pkl"
# Interval quantiles of actual / forecast, as (column, quantile).
INTERVAL_QUANTILES = (
    (columns.YHAT_LOWER, 0.10),
    (columns.YHAT_UPPER, 0.90),
    (columns.YHAT_LOWER_95, 0.025),
    (columns.YHAT_UPPER_95, 0.975),
)


@runtime_checkable
class Forecaster(Protocol):
    """A model that forecasts daily sales per series."""

    name: ClassVar[str]

    def fit(self, history: pd.DataFrame, stores: pd.DataFrame) -> Self:
        """Learn from a canonical sales history and the store metadata; returns self."""
        ...

    def predict(self, future: pd.DataFrame) -> pd.DataFrame:
        """Forecasts for covariate rows of the fitted series (`columns.FORECAST_COLUMNS`)."""
        ...

    def save(self, path: Path) -> None:
        """Write the fitted forecaster into the folder `path`."""
        ...


class NotFittedError(RuntimeError):
    """`predict` was called before `fit`."""


class UnknownSeriesError(ValueError):
    """The future asks for series the forecaster was not fitted on."""

    def __init__(self, series: list[tuple[int, str]]) -> None:
        self.series = series
        shown = ", ".join(f"store {store} product {product}" for store, product in series[:10])
        more = f" and {len(series) - 10} more" if len(series) > 10 else ""
        super().__init__(f"no model for {shown}{more}")


class PickledForecaster:
    """Save/load as one pickle file in a folder (fitted state is plain Python and numpy)."""

    def save(self, path: Path) -> None:
        """Write the forecaster into the folder `path` (created if missing)."""
        path.mkdir(parents=True, exist_ok=True)
        with (path / FORECASTER_FILE).open("wb") as out:
            pickle.dump(self, out, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a forecaster written by `save` (a trusted file: pickle runs code)."""
        with (path / FORECASTER_FILE).open("rb") as source:
            loaded = pickle.load(source)  # our own artefact
        if not isinstance(loaded, cls):
            raise TypeError(f"{path} holds a {type(loaded).__name__}, not a {cls.__name__}")
        return loaded


# Forecast/actual ratios beyond this factor either way count as this factor when the RMSPE
# factor is learnt (`IntervalCalibration.of_scored`).
SCALE_RATIO_LIMIT = 5.0


@dataclass(frozen=True)
class IntervalCalibration:
    """Quantiles of log(actual / forecast) per forecast horizon, from out-of-sample errors.

    Conformal-style intervals: a forecast's interval is the forecast scaled by the error
    quantiles observed at the same horizon on days the model had not seen. Widths never
    shrink with the horizon (later days are at least as uncertain as earlier ones).
    """

    horizons: np.ndarray  # 1..H
    quantiles: dict[str, np.ndarray]  # forecast column -> log ratio per horizon
    scale: float = 1.0  # multiplies point forecasts (see `of_scored`)

    @classmethod
    def of(
        cls,
        horizon_days: np.ndarray,
        log_ratio: np.ndarray,
        smooth_days: int = 7,
        scale: float = 1.0,
    ) -> Self:
        """Calibrate from out-of-sample log errors and the horizon (days) of each.

        Quantiles are taken over a window of `smooth_days` horizons around each horizon,
        so each estimate rests on several days of every series.
        """
        horizons = np.arange(1, int(horizon_days.max()) + 1)
        quantiles: dict[str, np.ndarray] = {}
        for column, level in INTERVAL_QUANTILES:
            values = np.empty(len(horizons))
            for position, horizon in enumerate(horizons):
                near = np.abs(horizon_days - horizon) <= smooth_days // 2
                values[position] = np.quantile(log_ratio[near], level)
            # Monotone in the horizon by pooling adjacent violators, not by a running
            # maximum: a running maximum ratchets up on every noisy estimate and widens.
            quantiles[column] = (
                _increasing_fit(values) if level > 0.5 else -_increasing_fit(-values)
            )
        return cls(horizons=horizons, quantiles=quantiles, scale=scale)

    @classmethod
    def of_scored(
        cls,
        yhat: np.ndarray,
        actual: np.ndarray,
        horizon_days: np.ndarray,
        rescale: bool = False,
        windows: np.ndarray | None = None,
    ) -> Self:
        """Calibrate from out-of-sample forecasts and actuals (days without sales left out).

        With `windows` (each day's backtest window) of several windows, each interval
        quantile is the median over the windows of that window's own quantile (per horizon):
        one window of unusual days (Christmas, Easter) does not set the width of every
        forecast, as it does when the windows' errors are pooled (all stores trained to
        2015-04-26, rolling windows from 2014-12-04: the data's last 48 days 87-89 % covered
        by the 80 % interval pooled, 83-85 % so; docs/benchmarks.md). The RMSPE factor is
        learnt on every window's days together.

        With `rescale`, also learn the factor on point forecasts that minimises RMSPE on
        these days, sum(p/a) / sum((p/a)^2): RMSPE punishes over-forecasts more than
        under-forecasts, so its optimum sits slightly below the median forecast. Ratios are
        clipped to [1/`SCALE_RATIO_LIMIT`, `SCALE_RATIO_LIMIT`] first: a few days with tiny
        actuals (a reopening, a stocktaking day) have ratios of 10-100, whose squares
        otherwise decide the factor of every forecast (all stores trained to 2015-03-09: 0.89,
        RMSPE 0.158 on the Easter weeks after it against 0.102 with no factor). A limit of 5
        leaves the factor of ordinary windows as it was (docs/benchmarks.md).
        """
        sold = (actual > 0) & (yhat > 0)
        ratio = yhat[sold] / actual[sold]
        bounded = np.clip(ratio, 1 / SCALE_RATIO_LIMIT, SCALE_RATIO_LIMIT)
        scale = float(bounded.sum() / (bounded**2).sum()) if rescale and len(ratio) else 1.0
        pooled = cls.of(horizon_days[sold], -np.log(ratio * scale), scale=scale)
        if windows is None:
            return pooled
        by_window = [
            cls.of(horizon_days[sold][in_window], -np.log(ratio[in_window] * scale))
            for in_window in (windows[sold] == number for number in np.unique(windows[sold]))
            if _covers(horizon_days[sold][in_window], pooled.horizons)
        ]
        if len(by_window) < 2:
            return pooled
        # A window whose days end a few horizons short of the longest (a shorter last
        # window) holds its last quantile over the horizons it lacks.
        return cls(
            horizons=pooled.horizons,
            quantiles={
                column: np.median(
                    [
                        np.interp(pooled.horizons, window.horizons, window.quantiles[column])
                        for window in by_window
                    ],
                    axis=0,
                )
                for column, _ in INTERVAL_QUANTILES
            },
            scale=scale,
        )

    def bounds(self, yhat: np.ndarray, horizon_days: np.ndarray) -> dict[str, np.ndarray]:
        """Interval columns for (scaled) point forecasts at horizons 1, 2, ... (days)."""
        position = np.clip(horizon_days, 1, len(self.horizons)) - 1
        return {
            column: yhat * np.exp(self.quantiles[column][position])
            for column, _ in INTERVAL_QUANTILES
        }


def _covers(horizon_days: np.ndarray, horizons: np.ndarray, smooth_days: int = 7) -> bool:
    """Whether days at these horizons give `IntervalCalibration.of` a quantile at each of
    `horizons` (some day within `smooth_days // 2` of each)."""
    if not len(horizon_days):
        return False
    present = np.unique(horizon_days)
    nearest = np.searchsorted(present, horizons)
    below = present[np.clip(nearest - 1, 0, len(present) - 1)]
    above = present[np.clip(nearest, 0, len(present) - 1)]
    distance = np.minimum(np.abs(horizons - below), np.abs(above - horizons))
    return bool((distance <= smooth_days // 2).all())


def _increasing_fit(values: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to `values` in least squares (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, count]
    for value in values.astype(float):
        blocks.append([value, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, count = blocks.pop()
            blocks[-1] = [
                (blocks[-1][0] * blocks[-1][1] + mean * count) / (blocks[-1][1] + count),
                blocks[-1][1] + count,
            ]
    return np.concatenate([np.full(int(count), mean) for mean, count in blocks])


def horizon_of(dates: pd.Series, cutoff: pd.Timestamp) -> np.ndarray:
    """Days after the cutoff (1 = the first forecast day)."""
    return np.asarray((dates - cutoff).dt.days, dtype=np.int64)


def forecast_frame(
    future: pd.DataFrame,
    yhat: np.ndarray,
    calibration: IntervalCalibration | None,
    cutoff: pd.Timestamp,
) -> pd.DataFrame:
    """Assemble `columns.FORECAST_COLUMNS` for `future`; closed days forecast 0.

    Without a calibration the intervals collapse onto the point forecast.
    """
    is_open = future[columns.OPEN].to_numpy() == 1
    scale = calibration.scale if calibration is not None else 1.0
    point = np.where(is_open, np.clip(yhat * scale, 0, None), 0.0)
    if calibration is None:
        bounds = {column: point for column, _ in INTERVAL_QUANTILES}
    else:
        bounds = calibration.bounds(point, horizon_of(future[columns.SALES_DATE], cutoff))
    # Gathered as arrays and framed once (assigning columns one by one cost a tenth of a
    # one-series forecast).
    frame: dict[str, Any] = {
        name: future[name].array
        for name in (columns.STORE_ID, columns.PRODUCT_ID, columns.SALES_DATE)
    }
    frame[columns.YHAT] = point
    for column, quantile in INTERVAL_QUANTILES:
        # The point forecast is RMSPE-optimal, which sits below the median: where a model
        # under-forecasts in most of its calibration days, a lower quantile can exceed it.
        # An interval always contains its own forecast.
        side = np.minimum if quantile < 0.5 else np.maximum
        frame[column] = side(bounds[column], point)
    return pd.DataFrame(frame)


def series_index(frame: pd.DataFrame) -> pd.MultiIndex:
    """Each row's (store, product) series, as an index (for `isin` against other series)."""
    return pd.MultiIndex.from_frame(frame[[columns.STORE_ID, columns.PRODUCT_ID]])


def series_of(frame: pd.DataFrame) -> set[tuple[int, str]]:
    """The (store, product) series in a frame."""
    # A set of the raw pairs first: cheaper than deduplicating a frame, and the conversions
    # then run once per series, not per row.
    pairs = set(
        zip(
            frame[columns.STORE_ID].to_numpy().tolist(),
            frame[columns.PRODUCT_ID].to_numpy().tolist(),
            strict=True,
        )
    )
    return {(int(store), str(product)) for store, product in pairs}


def holdout_split(
    history: pd.DataFrame, days: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """History before the last `days` days, those days as future rows, and the split date."""
    split = pd.Timestamp(history[columns.SALES_DATE].max()) - pd.Timedelta(days=days)
    earlier = history[history[columns.SALES_DATE] <= split]
    later = history[history[columns.SALES_DATE] > split]
    return earlier, later, split


def as_future(history: pd.DataFrame) -> pd.DataFrame:
    """Sales rows as the future-covariates frame (what a forecaster may know in advance)."""
    return history[list(columns.FUTURE_COLUMNS)].reset_index(drop=True)


SeriesKey = tuple[int, str]


class CalibratedForecaster(PickledForecaster):
    """A point forecaster whose intervals come from its own out-of-sample errors.

    `fit` first fits a probe on the history minus its last `calibration_days` days and
    forecasts those days; their errors calibrate the intervals (and, with `rmspe_scaling`,
    a factor on point forecasts). Then it fits on the whole history. A calibration from
    elsewhere (e.g. the errors of a backtest) can be passed instead, which skips the probe.

    Subclasses implement `_fit_point`, `_predict_point` and may cheapen `_probe` (and
    `_predict_open_days`).
    Per-series models (`per_series`) keep each series' fit apart: a series whose fit raises
    is listed in `failures_` (and forecast 0) instead of failing every series, and
    `with_series_of` swaps in other fits of some series (single-store retrains).
    """

    name: ClassVar[str]
    per_series: ClassVar[bool] = True
    # Whether `fit` spreads its work over an injected executor (Prophet's per-store chunks);
    # other models fit in one task, where a cluster adds only overhead.
    fans_out: ClassVar[bool] = False

    def __init__(
        self,
        calibration_days: int = 48,
        rmspe_scaling: bool = True,
        calibration: IntervalCalibration | None = None,
    ) -> None:
        self.calibration_days = calibration_days
        self.rmspe_scaling = rmspe_scaling
        self.calibration = calibration
        self.calibration_: IntervalCalibration | None = None
        self.cutoff_: pd.Timestamp | None = None
        self.series_: set[tuple[int, str]] = set()
        self.failures_: dict[SeriesKey, str] = {}

    def fans_out_on(self, history: pd.DataFrame) -> bool:
        """Whether fitting on `history` spreads over the injected executor, so the caller
        should call `fit` itself rather than send the whole fit to the executor as one
        task (`fans_out`, unless a model decides by the data)."""
        return self.fans_out

    def fit(self, history: pd.DataFrame, stores: pd.DataFrame) -> Self:
        """Fit on a canonical sales history (and store metadata); returns self."""
        if history.empty:
            raise ValueError("cannot fit on an empty history")
        calibration = self.calibration
        days = history[columns.SALES_DATE].nunique()
        if calibration is None and self.calibration_days > 0 and days > 2 * self.calibration_days:
            earlier, later, split = holdout_split(history, self.calibration_days)
            probe = self._probe()._fit_point(earlier, stores)
            # Series launched during the held-out days have nothing to be probed on.
            later = later[series_index(later).isin(series_index(earlier).unique())]
            future = as_future(later)
            yhat = probe._predict_point(future)
            calibration = IntervalCalibration.of_scored(
                yhat,
                later[columns.SALES].to_numpy(dtype=float),
                horizon_of(future[columns.SALES_DATE], split),
                rescale=self.rmspe_scaling,
            )
        self._fit_point(history, stores)
        self.calibration_ = calibration
        self.cutoff_ = pd.Timestamp(history[columns.SALES_DATE].max())
        self.series_ = series_of(history)
        return self

    def predict(self, future: pd.DataFrame) -> pd.DataFrame:
        """Forecasts with 80 % and 95 % intervals for covariate rows of fitted series."""
        if self.cutoff_ is None:
            raise NotFittedError(f"{self.name}: call fit() before predict()")
        unknown = sorted(series_of(future) - self.series_)
        if unknown:
            raise UnknownSeriesError(unknown)
        future = future.reset_index(drop=True)
        yhat = self._predict_open_days(future) if len(future) else np.empty(0)
        return forecast_frame(future, yhat, self.calibration_, self.cutoff_)

    def with_series_of(self, other: Self) -> Self:
        """A copy of this fitted model whose fits of `other`'s series are `other`'s.

        The calibration and cutoff stay this model's, so the series not in `other` forecast
        exactly as before.

        Raises:
            TypeError: For a global model (one fit serves every series).
        """
        if not self.per_series:
            raise TypeError(f"{self.name} is one global model: it cannot swap single series")
        merged = copy.copy(self)
        merged._merge_series(other)
        merged.series_ = self.series_ | other.series_
        merged.failures_ = {
            key: error for key, error in self.failures_.items() if key not in other.series_
        } | other.failures_
        return merged

    def _merge_series(self, other: Self) -> None:
        """Replace this (shallow-copied) model's fitted state of `other`'s series."""
        raise NotImplementedError

    def backtest_stand_in(self) -> Self:
        """The model a backtest window fits in this one's place (this one, unless a model
        has a cheaper form whose errors are no smaller than its own)."""
        return self

    def stand_in_description(self) -> str | None:
        """What `backtest_stand_in` fits in this model's place, in words (reports name it
        beside the figures it scored); None when a backtest fits this model itself."""
        return None

    def _probe(self) -> Self:
        """An unfitted copy used to measure out-of-sample errors."""
        return type(self)(**self._params())

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _fit_point(self, history: pd.DataFrame, stores: pd.DataFrame) -> Self:
        raise NotImplementedError

    def _predict_point(self, future: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def _predict_open_days(self, future: pd.DataFrame) -> np.ndarray:
        """`_predict_point` for `predict`, which forecasts closed days 0 whatever it gives
        them: a model may leave closed days out."""
        return self._predict_point(future)
