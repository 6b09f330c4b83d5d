"""Forecast accuracy: RMSPE (the competition's metric), MAPE, MAE, RMSE, bias, coverage."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sfmlops.core import columns as c

ACTUAL = "actual"
RMSPE = "rmspe"
MAPE = "mape"
MAE = "mae"
RMSE = "rmse"
BIAS = "bias"
COVERAGE_80 = "coverage_80"
COVERAGE_95 = "coverage_95"
DAYS = "days"
METRICS = (RMSPE, MAPE, MAE, RMSE, BIAS, COVERAGE_80, COVERAGE_95, DAYS)


def accuracy(scored: pd.DataFrame) -> dict[str, float]:
    """Metrics of forecasts against actuals, over the days with actual sales > 0.

    Days without sales (closed stores) are left out, as the competition's RMSPE does:
    a percentage error is undefined there and a closed day is forecast as 0 by rule.

    Args:
        scored: Forecast columns (`columns.FORECAST_VALUES`) and `ACTUAL`.

    Returns:
        `rmspe` and `mape` as fractions, `mae`/`rmse`/`bias` (mean forecast minus actual) in
        sales units, `coverage_80`/`coverage_95` as the share of actuals inside each interval,
        and `days`, the number of days scored (metrics are NaN when it is 0).
    """
    sold = scored[scored[ACTUAL] > 0]
    actual = sold[ACTUAL].to_numpy(dtype=float)
    forecast = sold[c.YHAT].to_numpy(dtype=float)
    if len(actual) == 0:
        return {name: (0.0 if name == DAYS else float("nan")) for name in METRICS}
    error = forecast - actual
    ratio = error / actual

    def covered(lower: str, upper: str) -> float:
        inside = (sold[lower].to_numpy() <= actual) & (actual <= sold[upper].to_numpy())
        return float(inside.mean())

    return {
        RMSPE: float(np.sqrt(np.mean(ratio**2))),
        MAPE: float(np.mean(np.abs(ratio))),
        MAE: float(np.mean(np.abs(error))),
        RMSE: float(np.sqrt(np.mean(error**2))),
        BIAS: float(np.mean(error)),
        COVERAGE_80: covered(c.YHAT_LOWER, c.YHAT_UPPER),
        COVERAGE_95: covered(c.YHAT_LOWER_95, c.YHAT_UPPER_95),
        DAYS: float(len(actual)),
    }


def accuracy_by(scored: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """`accuracy` per group of `keys`, one row per group (groups without sales get NaN)."""
    rows = [
        {
            **dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
            **accuracy(part),
        }
        for key, part in scored.groupby(list(keys), sort=True)
    ]
    return pd.DataFrame(rows, columns=[*keys, *METRICS])


def rmspe(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Root mean squared percentage error over the days with actual > 0."""
    sold = actual > 0
    if not sold.any():
        return float("nan")
    return float(np.sqrt(np.mean(((forecast[sold] - actual[sold]) / actual[sold]) ** 2)))
