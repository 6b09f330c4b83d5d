"""The trained bundle: every series' champion, ready to forecast any set of series and days.

A bundle holds the fitted models (the global one and the per-series ones), the champion
table from the backtest, and each series' usual open weekdays for callers that don't know
the future covariates. It saves as plain files in one folder (MLflow logs folders).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sfmlops.core import columns as c
from sfmlops.core.forecasting.base import Forecaster, UnknownSeriesError, series_of
from sfmlops.core.forecasting.models import forecaster_class

BUNDLE_FILE = "bundle.json"
CHAMPIONS_FILE = "champions.csv"
USUAL_OPEN_FILE = "usual_open.csv"
MODELS_FOLDER = "models"
OPEN_SHARE = "open_share"
# A weekday counts as a usual open day when the series opened on it this often recently.
USUAL_OPEN_SHARE = 0.5
USUAL_OPEN_WEEKS = 8

ASSUMED_OPEN = "open: missing, assumed the series' usual open weekdays"
ASSUMED_PROMO = "promo: missing, assumed no promotion"
ASSUMED_STATE_HOLIDAY = "state_holiday: missing, assumed no state holiday"
ASSUMED_SCHOOL_HOLIDAY = "school_holiday: missing, assumed no school holiday"


@dataclass(frozen=True)
class Forecast:
    """Forecasts (`columns.FORECAST_COLUMNS`, in the order of the request) and what was assumed."""

    frame: pd.DataFrame
    assumptions: list[str] = field(default_factory=list)
    champions: dict[str, int] = field(default_factory=dict)  # model -> series forecast by it


def usual_open_weekdays(history: pd.DataFrame, weeks: int = USUAL_OPEN_WEEKS) -> pd.DataFrame:
    """Share of open days per series and ISO weekday over the last `weeks` weeks."""
    last = history[c.SALES_DATE].max()
    recent = history[history[c.SALES_DATE] > last - pd.Timedelta(weeks=weeks)]
    weekday = (recent[c.SALES_DATE].dt.dayofweek + 1).rename(c.DAY_OF_WEEK)
    share = recent.groupby([recent[c.STORE_ID], recent[c.PRODUCT_ID], weekday])[c.OPEN].mean()
    return pd.DataFrame(share.rename(OPEN_SHARE).reset_index())


def future_days(series: Iterable[tuple[int, str]], start: pd.Timestamp, days: int) -> pd.DataFrame:
    """Rows `store_id`, `product_id`, `date` for every series and each of `days` days from `start`."""
    keys = sorted(series)
    dates = pd.date_range(pd.Timestamp(start), periods=days, freq="D")
    return pd.DataFrame(
        {
            c.STORE_ID: np.repeat([store for store, _ in keys], days).astype("int64"),
            c.PRODUCT_ID: np.repeat([product for _, product in keys], days),
            c.SALES_DATE: np.tile(dates.to_numpy(), len(keys)),
        }
    )


def complete_future(
    future: pd.DataFrame, usual_open: pd.DataFrame
) -> tuple[pd.DataFrame, list[str]]:
    """Fill covariates the caller did not give; returns the frame and what was assumed.

    Missing `open` (whole column or single values) means the series' usual open weekdays,
    missing `promo` no promotion, missing holidays none. `product_id` defaults to
    `columns.DEFAULT_PRODUCT`.
    """
    frame = future.copy()
    assumptions: list[str] = []
    if c.PRODUCT_ID not in frame:
        frame[c.PRODUCT_ID] = c.DEFAULT_PRODUCT
    if c.OPEN not in frame or frame[c.OPEN].isna().any():
        weekday = (frame[c.SALES_DATE].dt.dayofweek + 1).rename(c.DAY_OF_WEEK)
        usual = (
            frame[[c.STORE_ID, c.PRODUCT_ID]]
            .assign(**{c.DAY_OF_WEEK: weekday})
            .merge(usual_open, on=[c.STORE_ID, c.PRODUCT_ID, c.DAY_OF_WEEK], how="left")
        )
        guessed = (usual[OPEN_SHARE].fillna(1.0) >= USUAL_OPEN_SHARE).astype(int).to_numpy()
        given = (
            pd.to_numeric(frame[c.OPEN], errors="coerce")
            if c.OPEN in frame
            else pd.Series(np.nan, index=frame.index)
        )
        frame[c.OPEN] = given.fillna(pd.Series(guessed, index=frame.index))
        assumptions.append(ASSUMED_OPEN)
    for column, default, note in (
        (c.PROMO, 0, ASSUMED_PROMO),
        (c.STATE_HOLIDAY, "0", ASSUMED_STATE_HOLIDAY),
        (c.SCHOOL_HOLIDAY, 0, ASSUMED_SCHOOL_HOLIDAY),
    ):
        if column not in frame or frame[column].isna().any():
            frame[column] = frame[column].fillna(default) if column in frame else default
            assumptions.append(note)
    for column in (c.OPEN, c.PROMO, c.SCHOOL_HOLIDAY):
        frame[column] = frame[column].astype("int8")
    frame[c.STATE_HOLIDAY] = frame[c.STATE_HOLIDAY].astype(str)
    frame[c.STORE_ID] = frame[c.STORE_ID].astype("int64")
    return frame[list(c.FUTURE_COLUMNS)], assumptions


class ForecastBundle:
    """Fitted models plus the champion of every series.

    Args:
        models: Model name -> fitted forecaster.
        champions: One row per series: `store_id`, `product_id`, `model` and metrics.
        usual_open: From `usual_open_weekdays`.
        last_date: The last day of the training history; forecasts start after it.
        metadata: Free-form facts for tracking (windows, metrics, parameters).
    """

    def __init__(
        self,
        models: Mapping[str, Forecaster],
        champions: pd.DataFrame,
        usual_open: pd.DataFrame,
        last_date: pd.Timestamp,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        missing = set(champions[c.MODEL]) - set(models)
        if missing:
            raise ValueError(f"champions name models the bundle lacks: {sorted(missing)}")
        self.models = dict(models)
        self.champions = champions.reset_index(drop=True)
        self.usual_open = usual_open
        self.last_date = pd.Timestamp(last_date)
        self.metadata = dict(metadata or {})

    @property
    def series(self) -> set[tuple[int, str]]:
        """The series this bundle forecasts."""
        return series_of(self.champions)

    def predict(self, future: pd.DataFrame) -> Forecast:
        """Forecast future covariate rows with each series' champion.

        Args:
            future: `store_id`, `date` (after `last_date`) and any of the covariates
                `product_id`, `open`, `promo`, `state_holiday`, `school_holiday`.

        Raises:
            UnknownSeriesError: A series has no champion.
            ValueError: A date is not after the training history.
        """
        frame, assumptions = complete_future(future.reset_index(drop=True), self.usual_open)
        unknown = sorted(series_of(frame) - self.series)
        if unknown:
            raise UnknownSeriesError(unknown)
        early = frame[c.SALES_DATE] <= self.last_date
        if early.any():
            raise ValueError(
                f"{int(early.sum())} row(s) ask for dates up to {self.last_date.date()}, "
                "which the models were trained on; forecasts start the day after"
            )
        routed = frame.merge(
            self.champions[[c.STORE_ID, c.PRODUCT_ID, c.MODEL]],
            on=[c.STORE_ID, c.PRODUCT_ID],
            how="left",
        )
        parts = []
        used: dict[str, int] = {}
        for name, part in routed.groupby(c.MODEL, sort=True):
            rows = part.index.to_numpy()
            forecast = self.models[str(name)].predict(part[list(c.FUTURE_COLUMNS)])
            forecast.index = rows
            parts.append(forecast)
            used[str(name)] = len(series_of(part))
        result = pd.concat(parts).sort_index() if parts else _empty_forecast()
        return Forecast(result.reset_index(drop=True), assumptions, used)

    def save(self, path: Path) -> None:
        """Write the bundle into the folder `path` (created if missing)."""
        path.mkdir(parents=True, exist_ok=True)
        for name, model in self.models.items():
            model.save(path / MODELS_FOLDER / name)
        self.champions.to_csv(path / CHAMPIONS_FILE, index=False)
        self.usual_open.to_csv(path / USUAL_OPEN_FILE, index=False)
        description = {
            "models": sorted(self.models),
            "last_date": self.last_date.date().isoformat(),
            "metadata": self.metadata,
        }
        (path / BUNDLE_FILE).write_text(json.dumps(description, indent=2, default=str))

    @classmethod
    def load(cls, path: Path) -> ForecastBundle:
        """Read a bundle written by `save` (trusted files: models are pickles)."""
        if not (path / BUNDLE_FILE).is_file():
            raise FileNotFoundError(f"{path}: no trained bundle here ({BUNDLE_FILE} missing)")
        description = json.loads((path / BUNDLE_FILE).read_text())
        models = {
            name: forecaster_class(name).load(path / MODELS_FOLDER / name)
            for name in description["models"]
        }
        champions = pd.read_csv(path / CHAMPIONS_FILE, dtype={c.PRODUCT_ID: str})
        usual_open = pd.read_csv(path / USUAL_OPEN_FILE, dtype={c.PRODUCT_ID: str})
        return cls(
            models,
            champions,
            usual_open,
            pd.Timestamp(description["last_date"]),
            description.get("metadata", {}),
        )


def _empty_forecast() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=object) for name in c.FORECAST_COLUMNS})
