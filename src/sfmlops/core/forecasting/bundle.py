"""The trained bundle: every series' champion, ready to forecast any set of series and days.

A bundle holds the fitted models (the global one and the per-series ones), the champion
table from the backtest, and what callers that don't know the future covariates get instead:
each series' usual open weekdays, its promotion cycle and its store's German state (public
holidays). It saves as plain files in one folder (MLflow logs folders).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sfmlops.core import columns
from sfmlops.core.forecasting.base import Forecaster, UnknownSeriesError, series_of
from sfmlops.core.forecasting.bundle_signature import verify_bundle
from sfmlops.core.forecasting.models import forecaster_class

BUNDLE_FILE = "bundle.json"
CHAMPIONS_FILE = "champions.csv"
USUAL_OPEN_FILE = "usual_open.csv"
USUAL_PROMO_FILE = "usual_promo.csv"
STORE_STATES_FILE = "store_states.csv"
LEVELS_FILE = "levels.csv"
LEVEL_FACTOR = "level_factor"
MODELS_FOLDER = "models"
OPEN_SHARE = "open_share"
# A weekday counts as a usual open day when the series opened on it this often recently.
USUAL_OPEN_SHARE = 0.5
USUAL_OPEN_WEEKS = 8
PROMO_SHARE = "promo_share"
CYCLE_DAY = "cycle_day"
# Rossmann's promotions run Monday to Friday every other week: a two-week cycle per store.
PROMO_CYCLE_DAYS = 14
_CYCLE_ORIGIN = pd.Timestamp("1970-01-05")  # a Monday
# Rossmann's state-holiday codes: Easter (Good Friday, Easter Monday), Christmas, the others.
_EASTER_CODE, _CHRISTMAS_CODE, _PUBLIC_CODE = "b", "c", "a"

ASSUMED_OPEN = "open: missing, assumed the series' usual open weekdays, closed on public holidays"
ASSUMED_PROMO = "promo: missing, projected from the series' two-week promotion cycle"
ASSUMED_STATE_HOLIDAY = "state_holiday: missing, public holidays of the store's German state"
ASSUMED_SCHOOL_HOLIDAY = "school_holiday: missing, assumed no school holiday"


@dataclass(frozen=True)
class Forecast:
    """Forecasts (`columns.FORECAST_COLUMNS`, in the order of the request) and what was assumed.

    `covariates` holds, in the same order, the covariates the forecasts used
    (`columns.FUTURE_COLUMNS`, the derived ones filled in).
    """

    frame: pd.DataFrame
    assumptions: list[str] = field(default_factory=list)
    champions: dict[str, int] = field(default_factory=dict)  # model -> series forecast by it
    covariates: pd.DataFrame | None = None


def usual_open_weekdays(history: pd.DataFrame, weeks: int = USUAL_OPEN_WEEKS) -> pd.DataFrame:
    """Share of open days per series and ISO weekday over the last `weeks` weeks."""
    last = history[columns.SALES_DATE].max()
    recent = history[history[columns.SALES_DATE] > last - pd.Timedelta(weeks=weeks)]
    weekday = (recent[columns.SALES_DATE].dt.dayofweek + 1).rename(columns.DAY_OF_WEEK)
    share = recent.groupby([recent[columns.STORE_ID], recent[columns.PRODUCT_ID], weekday])[
        columns.OPEN
    ].mean()
    return pd.DataFrame(share.rename(OPEN_SHARE).reset_index())


def usual_promo_cycle(history: pd.DataFrame, weeks: int = USUAL_OPEN_WEEKS) -> pd.DataFrame:
    """Share of promotion days per series and day of the two-week cycle, last `weeks` weeks."""
    last = history[columns.SALES_DATE].max()
    recent = history[history[columns.SALES_DATE] > last - pd.Timedelta(weeks=weeks)]
    cycle_day = _cycle_day(recent[columns.SALES_DATE]).rename(CYCLE_DAY)
    share = recent.groupby([recent[columns.STORE_ID], recent[columns.PRODUCT_ID], cycle_day])[
        columns.PROMO
    ].mean()
    return pd.DataFrame(share.rename(PROMO_SHARE).reset_index())


def store_states(stores: pd.DataFrame) -> pd.DataFrame:
    """`store_id`, `state` of the stores that have one."""
    known = stores[stores[columns.STATE].notna()]
    return pd.DataFrame(
        {
            columns.STORE_ID: known[columns.STORE_ID].astype("int64").to_numpy(),
            columns.STATE: known[columns.STATE].astype(str).to_numpy(),
        }
    )


def public_holidays(states: pd.DataFrame, dates: pd.Series) -> pd.DataFrame:
    """Public holidays per store on `dates`: `store_id`, `date`, `state_holiday` code.

    From the `holidays` library's German calendar of each store's state (a store listed
    in two states, such as "HB,NI", takes the first), coded as the Rossmann data codes them.
    """
    first, last = pd.Timestamp(dates.min()), pd.Timestamp(dates.max())
    rows = [
        (state, day, code)
        for state in sorted(states[columns.STATE].unique())
        for year in range(first.year, last.year + 1)
        for day, code in _state_calendar(str(state), year)
        if first <= day <= last
    ]
    by_state = pd.DataFrame(
        rows, columns=[columns.STATE, columns.SALES_DATE, columns.STATE_HOLIDAY]
    )
    return states.merge(by_state, on=columns.STATE)[
        [columns.STORE_ID, columns.SALES_DATE, columns.STATE_HOLIDAY]
    ]


@functools.lru_cache(maxsize=512)
def _state_calendar(state: str, year: int) -> tuple[tuple[pd.Timestamp, str], ...]:
    """One state's public holidays of one year with their codes (cached: forecasts repeat)."""
    import holidays  # noqa: PLC0415  (loads its calendars on first use only)

    code = state.split(",", maxsplit=1)[0].strip()
    try:
        calendar = holidays.country_holidays("DE", subdiv=code, years=year)
    except NotImplementedError:
        return ()  # an unknown state gets no holidays rather than the wrong ones
    return tuple(
        (pd.Timestamp(day), _state_holiday_code(pd.Timestamp(day))) for day in sorted(calendar)
    )


def _state_holiday_code(day: pd.Timestamp) -> str:
    sunday = pd.Timestamp(year=day.year, month=1, day=1) + pd.offsets.Easter()
    if day in (sunday - pd.Timedelta(days=2), sunday + pd.Timedelta(days=1)):
        return _EASTER_CODE
    if day.month == 12 and day.day in (25, 26):
        return _CHRISTMAS_CODE
    return _PUBLIC_CODE


def _cycle_day(dates: pd.Series) -> pd.Series:
    return ((dates - _CYCLE_ORIGIN).dt.days % PROMO_CYCLE_DAYS).astype("int64")


def future_days(series: Iterable[tuple[int, str]], start: pd.Timestamp, days: int) -> pd.DataFrame:
    """Rows `store_id`, `product_id`, `date` for every series and each of `days` days from `start`."""
    keys = sorted(series)
    dates = pd.date_range(pd.Timestamp(start), periods=days, freq="D")
    return pd.DataFrame(
        {
            columns.STORE_ID: np.repeat([store for store, _ in keys], days).astype("int64"),
            columns.PRODUCT_ID: np.repeat([product for _, product in keys], days),
            columns.SALES_DATE: np.tile(dates.to_numpy(), len(keys)),
        }
    )


def complete_future(
    future: pd.DataFrame,
    usual_open: pd.DataFrame,
    usual_promo: pd.DataFrame | None = None,
    states: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Fill covariates the caller did not give; returns the frame and what was assumed.

    Missing values (whole column or single values) are derived, not zeros: `state_holiday`
    the public holidays of the store's state (with `states`, from `store_states`), `open`
    the series' usual open weekdays except on those holidays, `promo` the series' two-week
    promotion cycle (with `usual_promo`, from `usual_promo_cycle`; else no promotion),
    `school_holiday` none. `product_id` defaults to `columns.DEFAULT_PRODUCT`.
    """
    frame = future.copy()
    assumptions: list[str] = []
    if columns.PRODUCT_ID not in frame:
        frame[columns.PRODUCT_ID] = columns.DEFAULT_PRODUCT
    if columns.STATE_HOLIDAY not in frame or frame[columns.STATE_HOLIDAY].isna().any():
        # Only when some day lacks one: the lookup is a third of a small request's
        # covariates otherwise.
        holiday = pd.Series("0", index=frame.index)
        if states is not None and len(frame):
            found = frame[[columns.STORE_ID, columns.SALES_DATE]].merge(
                public_holidays(
                    states[states[columns.STORE_ID].isin(frame[columns.STORE_ID].unique())],
                    frame[columns.SALES_DATE],
                ),
                on=[columns.STORE_ID, columns.SALES_DATE],
                how="left",
            )
            holiday = pd.Series(
                found[columns.STATE_HOLIDAY].fillna("0").to_numpy(), index=frame.index
            )
        given_holiday = (
            frame[columns.STATE_HOLIDAY]
            if columns.STATE_HOLIDAY in frame
            else pd.Series(index=frame.index)
        )
        frame[columns.STATE_HOLIDAY] = given_holiday.astype(object).fillna(holiday)
        assumptions.append(ASSUMED_STATE_HOLIDAY)
    if columns.PROMO not in frame or frame[columns.PROMO].isna().any():
        projected = pd.Series(0.0, index=frame.index)
        if usual_promo is not None:
            cycle = (
                frame[[columns.STORE_ID, columns.PRODUCT_ID]]
                .assign(**{CYCLE_DAY: _cycle_day(frame[columns.SALES_DATE])})
                .merge(
                    usual_promo, on=[columns.STORE_ID, columns.PRODUCT_ID, CYCLE_DAY], how="left"
                )
            )
            projected = pd.Series(
                (cycle[PROMO_SHARE].fillna(0.0) >= 0.5).astype(float).to_numpy(), index=frame.index
            )
        given_promo = (
            pd.to_numeric(frame[columns.PROMO], errors="coerce")
            if columns.PROMO in frame
            else pd.Series(np.nan, index=frame.index)
        )
        frame[columns.PROMO] = given_promo.combine_first(projected)
        assumptions.append(ASSUMED_PROMO)
    if columns.OPEN not in frame or frame[columns.OPEN].isna().any():
        weekday = (frame[columns.SALES_DATE].dt.dayofweek + 1).rename(columns.DAY_OF_WEEK)
        usual = (
            frame[[columns.STORE_ID, columns.PRODUCT_ID]]
            .assign(**{columns.DAY_OF_WEEK: weekday})
            .merge(
                usual_open,
                on=[columns.STORE_ID, columns.PRODUCT_ID, columns.DAY_OF_WEEK],
                how="left",
            )
        )
        guessed = (
            (usual[OPEN_SHARE].fillna(1.0) >= USUAL_OPEN_SHARE).to_numpy()
            & (frame[columns.STATE_HOLIDAY].astype(str) == "0").to_numpy()
        ).astype(int)
        given = (
            pd.to_numeric(frame[columns.OPEN], errors="coerce")
            if columns.OPEN in frame
            else pd.Series(np.nan, index=frame.index)
        )
        frame[columns.OPEN] = given.fillna(pd.Series(guessed, index=frame.index))
        assumptions.append(ASSUMED_OPEN)
    if columns.SCHOOL_HOLIDAY not in frame or frame[columns.SCHOOL_HOLIDAY].isna().any():
        frame[columns.SCHOOL_HOLIDAY] = (
            frame[columns.SCHOOL_HOLIDAY].fillna(0) if columns.SCHOOL_HOLIDAY in frame else 0
        )
        assumptions.append(ASSUMED_SCHOOL_HOLIDAY)
    # Framed once (converting the columns in place cost more than the rest for a few rows).
    completed = {name: frame[name].array for name in columns.FUTURE_COLUMNS}
    for column in (columns.OPEN, columns.PROMO, columns.SCHOOL_HOLIDAY):
        completed[column] = frame[column].to_numpy().astype("int8")
    completed[columns.STATE_HOLIDAY] = frame[columns.STATE_HOLIDAY].astype(str).to_numpy()
    completed[columns.STORE_ID] = frame[columns.STORE_ID].to_numpy().astype("int64")
    return pd.DataFrame(completed, index=frame.index), assumptions


class ForecastBundle:
    """Fitted models plus the champion of every series.

    Args:
        models: Model name -> fitted forecaster.
        champions: One row per series: `store_id`, `product_id`, `model` and metrics.
        usual_open: From `usual_open_weekdays`.
        last_date: The last day of the training history; forecasts start after it.
        metadata: Free-form facts for tracking (windows, metrics, parameters).
        usual_promo: From `usual_promo_cycle` (none: missing promotions are assumed none).
        states: From `store_states` (none: missing state holidays are assumed none).
        levels: `store_id`, `product_id`, `level_factor`: series whose champion's forecasts
            (point and intervals) are multiplied by the factor, the level correction of a
            single-store retrain (`retraining.level_factor`); other series are untouched.
    """

    def __init__(
        self,
        models: Mapping[str, Forecaster],
        champions: pd.DataFrame,
        usual_open: pd.DataFrame,
        last_date: pd.Timestamp,
        metadata: Mapping[str, Any] | None = None,
        usual_promo: pd.DataFrame | None = None,
        states: pd.DataFrame | None = None,
        levels: pd.DataFrame | None = None,
    ) -> None:
        missing = set(champions[columns.MODEL]) - set(models)
        if missing:
            raise ValueError(f"champions name models the bundle lacks: {sorted(missing)}")
        self.models = dict(models)
        self.champions = champions.reset_index(drop=True)
        self.usual_open = usual_open
        self.last_date = pd.Timestamp(last_date)
        self.metadata = dict(metadata or {})
        self.usual_promo = usual_promo
        self.states = states
        self.levels = levels

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
        frame, assumptions = complete_future(
            future.reset_index(drop=True), self.usual_open, self.usual_promo, self.states
        )
        champion_row = self._champion_rows(frame)
        # Series without a champion found by the routing lookup, not by a set of every
        # series (building that per request cost 70 ms at 100k series).
        unknown = sorted(series_of(frame[champion_row < 0]))
        if unknown:
            raise UnknownSeriesError(unknown)
        early = frame[columns.SALES_DATE] <= self.last_date
        if early.any():
            raise ValueError(
                f"{int(early.sum())} row(s) ask for dates up to {self.last_date.date()}, "
                "which the models were trained on; forecasts start the day after"
            )
        names, model_of_champion = self._champion_models()
        model_of_row = model_of_champion[champion_row]
        parts = []
        used: dict[str, int] = {}
        for number in np.unique(model_of_row):
            rows = np.flatnonzero(model_of_row == number)
            name = str(names[number])
            # A request all of one model (the usual case) is not copied.
            part = frame if len(rows) == len(frame) else frame.take(rows)
            forecast = self.models[name].predict(part)
            forecast.index = rows
            parts.append(forecast)
            used[name] = len(np.unique(champion_row[rows]))
        if len(parts) == 1:
            result = parts[0]
        else:
            result = pd.concat(parts).sort_index() if parts else _empty_forecast()
        if self.levels is not None and len(self.levels) and len(result):
            result = _corrected(result, self.levels)
        return Forecast(result.reset_index(drop=True), assumptions, used, frame)

    def _champion_models(self) -> tuple[np.ndarray, np.ndarray]:
        """The champions' model names (sorted) and each champion's position among them."""
        models = self.__dict__.get("_models_of_champions")
        if models is None:
            # Built once per bundle: at 100k series it cost 32 ms per request, more than a
            # one-series forecast's whole budget.
            models = self._models_of_champions = np.unique(
                self.champions[columns.MODEL].astype(str).to_numpy(), return_inverse=True
            )
        return models

    def _champion_rows(self, frame: pd.DataFrame) -> np.ndarray:
        """Each row's series' row in `champions`, -1 for a series without a champion."""
        series = self.__dict__.get("_series_index")
        if series is None:
            # Built once per bundle: merging each request with the champion table cost
            # about a tenth of a one-series forecast.
            series = pd.MultiIndex.from_arrays(
                [
                    self.champions[columns.STORE_ID].to_numpy(dtype=np.int64),
                    self.champions[columns.PRODUCT_ID].to_numpy(),
                ]
            )
            self._series_index = series
        rows: np.ndarray = series.get_indexer(
            pd.MultiIndex.from_arrays(
                [
                    frame[columns.STORE_ID].to_numpy(dtype=np.int64),
                    frame[columns.PRODUCT_ID].to_numpy(),
                ]
            )
        )
        return rows

    def save(self, path: Path) -> None:
        """Write the bundle into the folder `path` (created if missing)."""
        path.mkdir(parents=True, exist_ok=True)
        for name, model in self.models.items():
            model.save(path / MODELS_FOLDER / name)
        self.champions.to_csv(path / CHAMPIONS_FILE, index=False)
        self.usual_open.to_csv(path / USUAL_OPEN_FILE, index=False)
        if self.usual_promo is not None:
            self.usual_promo.to_csv(path / USUAL_PROMO_FILE, index=False)
        if self.states is not None:
            self.states.to_csv(path / STORE_STATES_FILE, index=False)
        if self.levels is not None:
            self.levels.to_csv(path / LEVELS_FILE, index=False)
        description = {
            "models": sorted(self.models),
            "last_date": self.last_date.date().isoformat(),
            "metadata": self.metadata,
        }
        (path / BUNDLE_FILE).write_text(json.dumps(description, indent=2, default=str))

    @classmethod
    def load(cls, path: Path, *, signing_key: bytes | None) -> ForecastBundle:
        """Read a bundle written by `save`.

        Models are pickles, and unpickling runs code: with a `signing_key` the folder's
        signature is checked first (`bundle_signature.verify_bundle`) and nothing is read
        unless every file is as signed. None loads the folder as it is (a trusted local copy,
        or no key configured).

        Raises:
            FileNotFoundError: No bundle in `path`.
            BundleSignatureError: Unsigned, altered, or signed with another key.
        """
        if not (path / BUNDLE_FILE).is_file():
            raise FileNotFoundError(f"{path}: no trained bundle here ({BUNDLE_FILE} missing)")
        if signing_key is not None:
            verify_bundle(path, signing_key)
        description = json.loads((path / BUNDLE_FILE).read_text())
        models = {
            name: forecaster_class(name).load(path / MODELS_FOLDER / name)
            for name in description["models"]
        }
        champions = pd.read_csv(path / CHAMPIONS_FILE, dtype={columns.PRODUCT_ID: str})
        usual_open = pd.read_csv(path / USUAL_OPEN_FILE, dtype={columns.PRODUCT_ID: str})
        # Bundles saved before promotion cycles and states were kept have neither file.
        usual_promo = (
            pd.read_csv(path / USUAL_PROMO_FILE, dtype={columns.PRODUCT_ID: str})
            if (path / USUAL_PROMO_FILE).is_file()
            else None
        )
        states = (
            pd.read_csv(path / STORE_STATES_FILE, dtype={columns.STATE: str})
            if (path / STORE_STATES_FILE).is_file()
            else None
        )
        levels = (
            pd.read_csv(path / LEVELS_FILE, dtype={columns.PRODUCT_ID: str})
            if (path / LEVELS_FILE).is_file()
            else None
        )
        return cls(
            models,
            champions,
            usual_open,
            pd.Timestamp(description["last_date"]),
            description.get("metadata", {}),
            usual_promo,
            states,
            levels,
        )


def _corrected(forecast: pd.DataFrame, levels: pd.DataFrame) -> pd.DataFrame:
    """`forecast` with the rows of the series in `levels` multiplied by their factor; the
    other rows keep their values to the bit."""
    factor = (
        forecast[[columns.STORE_ID, columns.PRODUCT_ID]]
        .merge(levels, on=[columns.STORE_ID, columns.PRODUCT_ID], how="left")[LEVEL_FACTOR]
        .to_numpy(dtype=float)
    )
    corrected = ~np.isnan(factor)
    if not corrected.any():
        return forecast
    frame = forecast.copy()
    for column in columns.FORECAST_VALUES:
        values = frame[column].to_numpy(dtype=float).copy()
        values[corrected] *= factor[corrected]
        frame[column] = values
    return frame


def _empty_forecast() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=object) for name in columns.FORECAST_COLUMNS})
