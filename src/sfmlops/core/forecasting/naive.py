"""`seasonal_naive`: each weekday's recent mean, per series (the baseline to beat)."""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from sfmlops.core import columns
from sfmlops.core.forecasting.base import CalibratedForecaster, IntervalCalibration

_LEVEL = "level"


class SeasonalNaiveForecaster(CalibratedForecaster):
    """Forecast a day as the mean sales of the same weekday over the last `weeks` weeks.

    Only open days with sales count; a weekday the series never opened on in that span
    falls back to the series' mean over the span.
    """

    name: ClassVar[str] = "seasonal_naive"

    def __init__(
        self,
        weeks: int = 8,
        calibration_days: int = 48,
        rmspe_scaling: bool = True,
        calibration: IntervalCalibration | None = None,
    ) -> None:
        super().__init__(calibration_days, rmspe_scaling, calibration)
        self.weeks = weeks
        self.by_weekday_: pd.DataFrame | None = None
        self.by_series_: pd.DataFrame | None = None

    def _params(self) -> dict[str, Any]:
        return {
            "weeks": self.weeks,
            "calibration_days": self.calibration_days,
            "rmspe_scaling": self.rmspe_scaling,
            "calibration": self.calibration,
        }

    def _fit_point(self, history: pd.DataFrame, stores: pd.DataFrame) -> Self:
        last = history[columns.SALES_DATE].max()
        recent = history[
            (history[columns.SALES_DATE] > last - pd.Timedelta(weeks=self.weeks))
            & (history[columns.OPEN] == 1)
            & (history[columns.SALES] > 0)
        ]
        keys = [columns.STORE_ID, columns.PRODUCT_ID]
        weekday = (recent[columns.SALES_DATE].dt.dayofweek + 1).rename(columns.DAY_OF_WEEK)
        self.by_weekday_ = (
            recent.groupby([*[recent[k] for k in keys], weekday])[columns.SALES]
            .mean()
            .rename(_LEVEL)
            .reset_index()
        )
        self.by_series_ = recent.groupby(keys)[columns.SALES].mean().rename(_LEVEL).reset_index()
        return self

    def _merge_series(self, other: Self) -> None:
        if other.by_weekday_ is None or other.by_series_ is None:
            raise RuntimeError("seasonal_naive: merging an unfitted model")
        self.by_weekday_ = _replace_series(self.by_weekday_, other.by_weekday_, other.series_)
        self.by_series_ = _replace_series(self.by_series_, other.by_series_, other.series_)

    def _predict_point(self, future: pd.DataFrame) -> np.ndarray:
        if self.by_weekday_ is None or self.by_series_ is None:
            raise RuntimeError("seasonal_naive: not fitted")
        keys = [columns.STORE_ID, columns.PRODUCT_ID]
        rows = future[keys].assign(
            **{columns.DAY_OF_WEEK: future[columns.SALES_DATE].dt.dayofweek + 1}
        )
        weekday_level = rows.merge(self.by_weekday_, on=[*keys, columns.DAY_OF_WEEK], how="left")
        series_level = rows.merge(self.by_series_, on=keys, how="left")
        level = weekday_level[_LEVEL].fillna(series_level[_LEVEL]).fillna(0.0)
        return level.to_numpy(dtype=float)


def _replace_series(
    mine: pd.DataFrame | None, theirs: pd.DataFrame, series: set[tuple[int, str]]
) -> pd.DataFrame:
    """`mine` without the rows of `series`, plus `theirs`."""
    if mine is None:
        return theirs
    keys = pd.MultiIndex.from_frame(mine[[columns.STORE_ID, columns.PRODUCT_ID]])
    kept = mine[~keys.isin(list(series))]
    return pd.concat([kept, theirs], ignore_index=True)
