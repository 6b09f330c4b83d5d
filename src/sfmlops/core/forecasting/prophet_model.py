"""`prophet`: one Prophet model per series on its full history, with promo/holiday regressors.

The reference system fitted Prophet on the last four months with yearly seasonality, which
extrapolates wildly; here each series sees its whole history (yearly seasonality only from
two years of it, Prophet's own rule), the target is log sales of open days, and promotions and holidays are
regressors. Series are fitted in chunks, one task per chunk, through an injected executor.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from sfmlops.core import columns
from sfmlops.core.forecasting.base import CalibratedForecaster, IntervalCalibration, SeriesKey
from sfmlops.core.forecasting.executors import Executor, SequentialExecutor, chunks

_REGRESSORS = (columns.PROMO, columns.STATE_HOLIDAY, columns.SCHOOL_HOLIDAY)
ChunkResult = tuple[dict[SeriesKey, str], dict[SeriesKey, str]]


class ProphetForecaster(CalibratedForecaster):
    """Per-series Prophet with weekly + yearly seasonality and promo/holiday regressors.

    Args:
        executor: Runs the per-chunk fits (default: in this process). Not saved with the model.
        chunk_size: Series per task.
    """

    name: ClassVar[str] = "prophet"
    fans_out: ClassVar[bool] = True

    def __init__(
        self,
        executor: Executor | None = None,
        chunk_size: int = 25,
        calibration_days: int = 48,
        rmspe_scaling: bool = True,
        calibration: IntervalCalibration | None = None,
    ) -> None:
        super().__init__(calibration_days, rmspe_scaling, calibration)
        self.executor = executor
        self.chunk_size = chunk_size
        self.models_: dict[SeriesKey, str] = {}  # Prophet's own JSON serialisation
        self._loaded: dict[SeriesKey, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Executors hold pools or cluster handles; loaded Prophet objects are a cache.
        return {**self.__dict__, "executor": None, "_loaded": {}}

    def _params(self) -> dict[str, Any]:
        return {
            "executor": self.executor,
            "chunk_size": self.chunk_size,
            "calibration_days": self.calibration_days,
            "rmspe_scaling": self.rmspe_scaling,
            "calibration": self.calibration,
        }

    def _fit_point(self, history: pd.DataFrame, stores: pd.DataFrame) -> Self:
        sold = history[(history[columns.OPEN] == 1) & (history[columns.SALES] > 0)]
        groups = [
            (key, _training_frame(part))
            for key, part in sold.groupby([columns.STORE_ID, columns.PRODUCT_ID], sort=True)
        ]
        tasks = chunks(groups, self.chunk_size)
        executor = self.executor or SequentialExecutor()
        fitted: dict[SeriesKey, str] = {}
        failures: dict[SeriesKey, str] = {}
        for models, errors in executor.map(fit_prophet_chunk, tasks):
            fitted.update(models)
            failures.update(errors)
        self.models_ = fitted
        self.failures_ = failures
        self._loaded = {}
        return self

    def _merge_series(self, other: Self) -> None:
        self.models_ = {
            key: model for key, model in self.models_.items() if key not in other.series_
        } | other.models_
        self._loaded = {}

    def _predict_point(self, future: pd.DataFrame) -> np.ndarray:
        # Prophet is imported when used: it takes seconds and most commands never need it.
        from prophet.serialize import model_from_json  # noqa: PLC0415

        yhat = np.zeros(len(future))
        for (store_id, product_id), part in future.groupby(
            [columns.STORE_ID, columns.PRODUCT_ID], sort=False
        ):
            series: SeriesKey = (int(str(store_id)), str(product_id))
            if series not in self.models_:
                continue  # never open with sales in training, or its fit failed: forecast 0
            model = self._loaded.get(series)
            if model is None:
                model = model_from_json(self.models_[series])
                self._loaded[series] = model
            frame = _regressor_frame(part)
            # Prophet returns its forecast sorted by date, whatever order it was asked in.
            by_date = model.predict(frame).set_index("ds")["yhat"]
            predicted = by_date.reindex(frame["ds"]).to_numpy(dtype=float)
            yhat[part.index.to_numpy()] = np.expm1(predicted)
        return yhat


def fit_prophet_chunk(series: list[tuple[Any, pd.DataFrame]]) -> ChunkResult:
    """Fit one Prophet model per series of a chunk.

    A task function for executors: module-level and picklable. Prophet's optimiser writes
    its files into a temporary folder that is removed when the chunk is done.

    Returns:
        The JSON serialisation of each fitted series, and the error of each series whose
        fit raised (one bad series must not cost the chunk's others their models).
    """
    from prophet import Prophet  # noqa: PLC0415 - slow import, only where used
    from prophet.serialize import model_to_json  # noqa: PLC0415

    # cmdstanpy logs two INFO lines per fit; thousands of fits would drown the progress.
    logging.getLogger("cmdstanpy").disabled = True
    fitted: dict[SeriesKey, str] = {}
    failures: dict[SeriesKey, str] = {}
    with tempfile.TemporaryDirectory(prefix="sfmlops-prophet-") as folder:
        for key, frame in series:
            series_key = (int(key[0]), str(key[1]))
            model = Prophet(
                weekly_seasonality=True,
                # Prophet's own rule: a yearly cycle only from two years of history. Fitted to
                # less, its Fourier terms extrapolate without bound on the log scale (90 days of
                # store 3: forecasts of 1e22).
                yearly_seasonality="auto",
                daily_seasonality=False,
                uncertainty_samples=0,  # intervals come from out-of-sample errors
            )
            for name in _REGRESSORS:
                model.add_regressor(name, standardize=False)
            try:
                model.fit(frame, output_dir=folder)
            except Exception as error:  # any fit error is this series' alone
                failures[series_key] = f"prophet: {type(error).__name__}: {error}"
                continue
            fitted[series_key] = model_to_json(model)
    return fitted, failures


def _training_frame(part: pd.DataFrame) -> pd.DataFrame:
    frame = _regressor_frame(part)
    frame["y"] = np.log1p(part[columns.SALES].to_numpy(dtype=float))
    return frame


def _regressor_frame(part: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ds": part[columns.SALES_DATE].to_numpy(),
            columns.PROMO: part[columns.PROMO].to_numpy(dtype=float),
            columns.STATE_HOLIDAY: (part[columns.STATE_HOLIDAY].astype(str) != "0").to_numpy(
                dtype=float
            ),
            columns.SCHOOL_HOLIDAY: part[columns.SCHOOL_HOLIDAY].to_numpy(dtype=float),
        }
    )
