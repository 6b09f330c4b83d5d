"""Covariates for the global model: calendar, promotions, holidays, closures and store profile.

Everything a row's features use is either known in advance for that day (calendar, the
caller's open/promo/holiday covariates, store metadata) or a store statistic computed from
the history before the cutoff (`StoreStats`), so a model fitted on history up to a cutoff
never sees the days it forecasts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sfmlops.core import columns

# Proximity features are capped: beyond a few weeks a holiday or closure no longer matters,
# and a cap keeps "no event known" (end of the calendar) the same as "far away".
PROXIMITY_CAP_DAYS = 21
REOPENING_CAP_DAYS = 60
RECENT_DAYS = 91  # "recent level": the quarter before the cutoff
LATEST_DAYS = 28  # "latest level": the four weeks before the cutoff
RUN_CAP_DAYS = 45  # position in a run of school holidays (summer holidays last ~6 weeks)
LONG_CLOSURE_DAYS = 3  # a run of closed weekdays at least this long is a refurbishment

# A frame, or its columns as arrays by name.
_Columns = pd.DataFrame | Mapping[str, np.ndarray]

_CATEGORIES = {
    columns.STORE_TYPE: ("a", "b", "c", "d"),
    columns.ASSORTMENT: ("a", "b", "c"),
    columns.STATE_HOLIDAY: columns.STATE_HOLIDAY_CODES,
}


@dataclass(frozen=True)
class StoreStats:
    """Per-store statistics of the training window (open days with sales > 0, log scale).

    Attributes:
        by_store: One row per store: mean and spread of log sales, promo uplift, recent level
            relative to the whole window, share of open Sundays, log customers.
        by_weekday: One row per (store, ISO weekday): mean log sales minus the store mean.
        cutoff: The last day the statistics saw.
    """

    by_store: pd.DataFrame
    by_weekday: pd.DataFrame
    cutoff: pd.Timestamp

    @classmethod
    def of(cls, history: pd.DataFrame) -> StoreStats:
        """Statistics of `history` (canonical sales frame); rows after its last day don't exist."""
        cutoff = pd.Timestamp(history[columns.SALES_DATE].max())
        open_days = history[(history[columns.OPEN] == 1) & (history[columns.SALES] > 0)]
        log_sales = pd.Series(
            np.log1p(open_days[columns.SALES].to_numpy(dtype=float)), index=open_days.index
        )
        store = open_days[columns.STORE_ID]
        weekday = open_days[columns.SALES_DATE].dt.dayofweek + 1
        grouped = log_sales.groupby(store)
        mean = grouped.mean()
        recent = open_days[columns.SALES_DATE] > cutoff - pd.Timedelta(days=RECENT_DAYS)
        latest = open_days[columns.SALES_DATE] > cutoff - pd.Timedelta(days=LATEST_DAYS)
        promo = open_days[columns.PROMO] == 1
        promo_mean = log_sales[promo].groupby(store[promo]).mean()
        plain_mean = log_sales[~promo].groupby(store[~promo]).mean()
        customers = pd.to_numeric(open_days[columns.CUSTOMERS], errors="coerce").astype(float)
        days_per_store = history.groupby(columns.STORE_ID)[columns.SALES_DATE].nunique()
        sundays = open_days[weekday == 7].groupby(columns.STORE_ID)[columns.SALES_DATE].nunique()
        by_store = pd.DataFrame(
            {
                "store_mean_log": mean,
                "store_median_log": grouped.median(),
                "store_std_log": grouped.std(),
                "store_promo_uplift": (promo_mean - plain_mean).reindex(mean.index),
                "store_recent_level": (
                    log_sales[recent].groupby(store[recent]).mean().reindex(mean.index) - mean
                ),
                "store_sunday_share": (sundays.reindex(mean.index).fillna(0) * 7)
                / days_per_store.reindex(mean.index),
                "store_mean_log_customers": pd.Series(np.log1p(customers), index=store.index)
                .groupby(store)
                .mean(),
            }
        )
        by_store.index.name = columns.STORE_ID
        by_store["store_recent_level_28"] = (
            log_sales[latest].groupby(store[latest]).mean().reindex(mean.index) - mean
        )
        by_weekday = (
            (log_sales - store.map(mean))
            .groupby([store, weekday.rename(columns.DAY_OF_WEEK)])
            .mean()
            .rename("store_weekday_effect")
            .reset_index()
        )
        return cls(by_store=by_store.reset_index(), by_weekday=by_weekday, cutoff=cutoff)


def store_profile(stores: pd.DataFrame) -> pd.DataFrame:
    """Static store metadata as model-ready columns, one row per store."""
    profile = pd.DataFrame({columns.STORE_ID: stores[columns.STORE_ID].astype("int64")})
    for name in (columns.STORE_TYPE, columns.ASSORTMENT):
        profile[name] = _codes(stores[name], _CATEGORIES[name])
    states = sorted(str(s) for s in stores[columns.STATE].dropna().unique())
    profile[columns.STATE] = _codes(stores[columns.STATE], tuple(states))
    profile[columns.COMPETITION_DISTANCE] = stores[columns.COMPETITION_DISTANCE].astype(float)
    year = stores[columns.COMPETITION_OPEN_SINCE_YEAR].astype("Float64")
    month = stores[columns.COMPETITION_OPEN_SINCE_MONTH].astype("Float64")
    profile["competition_open_month_index"] = (year * 12 + month - 1).astype(float)
    profile[columns.PROMO2] = stores[columns.PROMO2].fillna(0).astype(int)
    since_year = stores[columns.PROMO2_SINCE_YEAR].astype("Float64").fillna(0)
    since_week = stores[columns.PROMO2_SINCE_WEEK].astype("Float64").fillna(1)
    # Promo2 starts on the Monday of its ISO week; as an approximate day index per year.
    profile["promo2_start_day_index"] = (since_year * 365.25 + (since_week - 1) * 7).astype(float)
    intervals = stores[columns.PROMO_INTERVAL].fillna("").astype(str)
    for number, month_name in enumerate(columns.PROMO_INTERVAL_MONTHS, start=1):
        profile[f"promo2_month_{number}"] = intervals.str.split(",").apply(
            lambda months, name=month_name: name in months
        )
    profile["promo2_period"] = [
        _first_interval_month(value, columns.PROMO_INTERVAL_MONTHS) for value in intervals
    ]
    return profile


@dataclass(frozen=True)
class Calendar:
    """Holidays per German state and closures per store, over history and future days.

    Built from the rows' own `state_holiday`/`school_holiday`/`open` flags: a state has a
    holiday on a day when any of its stores reports one, so stores with gaps in their history
    still see their state's holidays.
    """

    state_days: pd.DataFrame  # state, date, proximity columns
    store_days: pd.DataFrame  # store_id, date, closure proximity columns

    @classmethod
    def of(cls, rows: pd.DataFrame, profile: pd.DataFrame) -> Calendar:
        """The calendar of `rows` (covariate rows keyed by `columns.SALES_DATE`)."""
        return cls.of_parts(state_flags(rows, profile), rows)

    @classmethod
    def of_parts(cls, flags: Mapping[str, np.ndarray], rows: _Columns) -> Calendar:
        """The calendar from states' holiday flags and the rows of the stores to look up.

        Args:
            flags: `state_flags` of every row the states' holidays come from; several such
                may be concatenated (a day is a holiday when any of them says so).
            rows: Covariate rows of the stores whose closures and promotions are looked up
                (a frame, or its columns as arrays by name): all of each such store's rows,
                for its runs and proximities.
        """
        state_keys, state_dates, state_groups, (holiday, school) = _state_days(flags)
        state_days: dict[str, np.ndarray] = {
            columns.STATE: state_keys,
            columns.SALES_DATE: state_dates,
            **_proximity(state_groups, "state_holiday", holiday, PROXIMITY_CAP_DAYS),
            **_proximity(state_groups, "school_holiday", school, PROXIMITY_CAP_DAYS),
        }
        position, length = state_groups.runs(school)
        state_days["days_into_school_holiday"] = np.where(
            school, np.minimum(position, RUN_CAP_DAYS), 0
        )
        state_days["days_left_school_holiday"] = np.where(
            school, np.minimum(length - position + 1, RUN_CAP_DAYS), 0
        )

        store_keys, store_dates, store_groups, (closed, promo) = _store_days(rows)
        # A promotion runs for days in a row (Rossmann: Monday to Friday, every other week):
        # where a day sits in that cycle, not only whether it has one.
        promo_start = promo & ~store_groups.previous(promo)
        promo_end = promo & ~store_groups.following(promo)
        _, run_length = store_groups.runs(closed)
        long_closure = closed & (run_length >= LONG_CLOSURE_DAYS)
        store_days: dict[str, np.ndarray] = {
            columns.STORE_ID: store_keys,
            columns.SALES_DATE: store_dates,
            **_proximity(store_groups, "promo_start", promo_start, PROXIMITY_CAP_DAYS),
            **_proximity(store_groups, "promo_end", promo_end, PROXIMITY_CAP_DAYS),
            **_proximity(store_groups, "closure", closed, PROXIMITY_CAP_DAYS),
            **_proximity(store_groups, "long_closure", long_closure, REOPENING_CAP_DAYS),
        }
        return cls(state_days=pd.DataFrame(state_days), store_days=pd.DataFrame(store_days))


@dataclass(frozen=True)
class CalendarCarry:
    """What the calendar of history rows passes on to the days after them, per state and per
    store, so that `Calendar.of_parts` of history and later rows can be built from the later
    rows alone (`calendar_after`), with the same values.

    A gbm builds it once per loaded model from its stored context: scanning every requested
    store's 67 stored days per request was most of an every-store request's calendar (75,000
    context rows against its 7,805).

    Attributes:
        states: The history's states, sorted; `state_values` holds each one's carry.
        stores: The history's stores, sorted; `store_values` holds each one's carry.
    """

    states: np.ndarray
    state_values: dict[str, np.ndarray]
    stores: np.ndarray
    store_values: dict[str, np.ndarray]

    @classmethod
    def of(cls, flags: Mapping[str, np.ndarray], rows: _Columns) -> CalendarCarry:
        """The carry of history given as `Calendar.of_parts` takes it."""
        state_keys, _, state_groups, (holiday, school) = _state_days(flags)
        last = state_groups.is_last
        position, _ = state_groups.runs(school)
        state_values = {
            "last_day": state_groups.day_number[last],
            "state_holiday": _last_flagged_day(state_groups, holiday)[last],
            "school_holiday": _last_flagged_day(state_groups, school)[last],
            # The length of the run of school-holiday days the history ends with (0: none).
            "school_run": np.where(school, position, 0)[last],
        }
        states = state_keys[last]
        store_keys, _, groups, (closed, promo) = _store_days(rows)
        last = groups.is_last
        position, length = groups.runs(closed)
        # The closed days the history ends with: how long their run is depends on the days
        # after (so does whether the last day ends a promotion).
        trailing = closed & (groups.positions + length - position == groups.last)
        store_values = {
            "last_day": groups.day_number[last],
            "promo": promo[last],
            "closed_run": np.where(closed, position, 0)[last],
            "promo_start": _last_flagged_day(groups, promo & ~groups.previous(promo))[last],
            "promo_end": _last_flagged_day(
                groups, promo & ~groups.following(promo) & ~groups.is_last
            )[last],
            "closure": _last_flagged_day(groups, closed)[last],
            "long_closure": _last_flagged_day(
                groups, closed & (length >= LONG_CLOSURE_DAYS) & ~trailing
            )[last],
        }
        return cls(states, state_values, store_keys[last], store_values)

    def calendar_after(self, flags: Mapping[str, np.ndarray], rows: _Columns) -> Calendar | None:
        """`Calendar.of_parts` of the history and these later rows (as that takes them),
        covering the later rows' days only; None when a state or store of them has a day
        that is not after its history's last (then build it from both).
        """
        state_keys, state_dates, state_groups, (holiday, school) = _state_days(flags)
        state_carry = _carried(self.states, self.state_values, state_keys)
        store_keys, store_dates, groups, (closed, promo) = _store_days(rows)
        store_carry = _carried(self.stores, self.store_values, store_keys)
        if (state_groups.day_number <= state_carry["last_day"]).any() or (
            groups.day_number <= store_carry["last_day"]
        ).any():
            return None

        state_days: dict[str, np.ndarray] = {
            columns.STATE: state_keys,
            columns.SALES_DATE: state_dates,
            **_proximity_after(
                state_groups, "state_holiday", holiday, PROXIMITY_CAP_DAYS, state_carry
            ),
            **_proximity_after(
                state_groups, "school_holiday", school, PROXIMITY_CAP_DAYS, state_carry
            ),
        }
        position, length = state_groups.runs(school)
        continued = np.where(_in_first_run(state_groups, position), state_carry["school_run"], 0)
        state_days["days_into_school_holiday"] = np.where(
            school, np.minimum(position + continued, RUN_CAP_DAYS), 0
        )
        state_days["days_left_school_holiday"] = np.where(
            school, np.minimum(length - position + 1, RUN_CAP_DAYS), 0
        )

        first = groups.first
        promo_start = promo & ~(groups.previous(promo) | (groups.is_first & store_carry["promo"]))
        promo_end = promo & ~groups.following(promo)
        position, length = groups.runs(closed)
        run_length = length + np.where(
            _in_first_run(groups, position), store_carry["closed_run"], 0
        )
        long_closure = closed & (run_length >= LONG_CLOSURE_DAYS)
        # The history's last day ends a promotion unless the first later day has one; its
        # closed days end a long closure once the later days make their run long enough.
        history_run = store_carry["closed_run"] + np.where(closed[first], length[first], 0)
        store_carry["promo_end"] = np.where(
            store_carry["promo"] & ~promo[first], store_carry["last_day"], store_carry["promo_end"]
        )
        store_carry["long_closure"] = np.where(
            (store_carry["closed_run"] > 0) & (history_run >= LONG_CLOSURE_DAYS),
            store_carry["last_day"],
            store_carry["long_closure"],
        )
        store_days: dict[str, np.ndarray] = {
            columns.STORE_ID: store_keys,
            columns.SALES_DATE: store_dates,
            **_proximity_after(groups, "promo_start", promo_start, PROXIMITY_CAP_DAYS, store_carry),
            **_proximity_after(groups, "promo_end", promo_end, PROXIMITY_CAP_DAYS, store_carry),
            **_proximity_after(groups, "closure", closed, PROXIMITY_CAP_DAYS, store_carry),
            **_proximity_after(
                groups, "long_closure", long_closure, REOPENING_CAP_DAYS, store_carry
            ),
        }
        return Calendar(state_days=pd.DataFrame(state_days), store_days=pd.DataFrame(store_days))


def state_flags(rows: pd.DataFrame, profile: pd.DataFrame | KeyedTable) -> dict[str, np.ndarray]:
    """Per (state, date) of `rows`: whether any of its stores reports a state or a school
    holiday (`Calendar.of_parts`' input), sorted by state and date, as arrays by name (a
    request's calendar concatenates them with the stored context's: framing them cost more
    than the scans).

    Args:
        rows: Covariate rows.
        profile: `store_profile(stores)`, or it keyed by store (`StoreTables.profile`).
    """
    if not isinstance(profile, KeyedTable):
        profile = KeyedTable(profile, [columns.STORE_ID])
    state = profile.lookup([rows[columns.STORE_ID].to_numpy()], [columns.STATE])[columns.STATE]
    # A store without a profile is in state -1, as one without a state.
    state = np.where(pd.isna(state), -1, state).astype(np.int64)
    keys, dates, (holiday, school) = _any_per_day(
        state,
        rows[columns.SALES_DATE].to_numpy(),
        [
            rows[columns.STATE_HOLIDAY].astype(str).to_numpy() != "0",
            rows[columns.SCHOOL_HOLIDAY].to_numpy().astype(int) == 1,
        ],
    )
    return {
        columns.STATE: keys,
        columns.SALES_DATE: dates,
        "state_holiday_day": holiday,
        "school_holiday_day": school,
    }


def _array(table: _Columns, name: str) -> np.ndarray:
    """A column of a frame, or of arrays by name, as an array."""
    values = table[name]
    if isinstance(values, np.ndarray):
        return values
    array: np.ndarray = values.to_numpy()
    return array


def build_features(
    rows: pd.DataFrame, profile: pd.DataFrame, stats: StoreStats, calendar: Calendar
) -> pd.DataFrame:
    """The model's feature matrix for covariate rows (index aligned with `rows`).

    Args:
        rows: Covariate rows: `store_id`, `date`, `open`, `promo`, `state_holiday`,
            `school_holiday`.
        profile: `store_profile(stores)`.
        stats: Statistics of the training window.
        calendar: A `Calendar` covering `rows`.
    """
    return pd.DataFrame(
        feature_columns(rows, StoreTables.of(profile, stats), calendar), index=rows.index
    )


def feature_columns(
    rows: pd.DataFrame, tables: StoreTables, calendar: Calendar
) -> dict[str, np.ndarray]:
    """`build_features` as arrays by name, in the frame's column order (no frame built);
    `tables` of the profile and statistics (a model keeps its own, see `StoreTables`)."""
    date = rows[columns.SALES_DATE].to_numpy()
    # Calendar fields of each distinct day, spread to the rows: a request has a handful of
    # days, a training history a thousand, and each pandas date field has a fixed cost.
    days, day_of = np.unique(date, return_inverse=True)
    calendar_days = pd.DatetimeIndex(days)
    store_id = rows[columns.STORE_ID].to_numpy().astype("int64")
    day_of_week = (calendar_days.dayofweek.to_numpy() + 1)[day_of]
    month = calendar_days.month.to_numpy()[day_of]
    year = calendar_days.year.to_numpy()[day_of]
    day_of_year = calendar_days.dayofyear.to_numpy()[day_of]
    promo = rows[columns.PROMO].to_numpy().astype(int)
    school_holiday = rows[columns.SCHOOL_HOLIDAY].to_numpy().astype(int)
    features: dict[str, np.ndarray] = {
        columns.STORE_ID: store_id,
        columns.DAY_OF_WEEK: day_of_week,
        "day_of_month": calendar_days.day.to_numpy()[day_of],
        "month": month,
        "year": year,
        "day_of_year": day_of_year,
        "week_of_year": calendar_days.isocalendar().week.to_numpy().astype(int)[day_of],
        columns.PROMO: promo,
        columns.STATE_HOLIDAY: _code_array(
            rows[columns.STATE_HOLIDAY].astype(str).to_numpy(), columns.STATE_HOLIDAY_CODES
        ),
        columns.SCHOOL_HOLIDAY: school_holiday,
        # Both in one split: a promotion lifts school-holiday days less than others (the
        # default gbm forecast 2014's school-holiday promotion days 3 % high and the other
        # school-holiday days 3 % low; docs/benchmarks.md). Used by `gbm.BLEND` only.
        "promo_school_holiday": promo * 2 + school_holiday,
    }

    # One lookup per table instead of a chain of merges: each merge copied every column
    # gathered so far (most of a shard fit's feature-building time at 2,500 series).
    from_profile = tables.profile.lookup([store_id])
    merged = {
        **from_profile,
        **tables.by_store.lookup([store_id]),
        **tables.by_weekday.lookup([store_id, day_of_week]),
        **KeyedTable(calendar.state_days, [columns.STATE, columns.SALES_DATE]).lookup(
            [from_profile[columns.STATE], date]
        ),
        **KeyedTable(calendar.store_days, [columns.STORE_ID, columns.SALES_DATE]).lookup(
            [store_id, date]
        ),
    }

    month_index = (year * 12 + month - 1).astype(float)
    features["competition_months_open"] = np.clip(
        month_index - merged["competition_open_month_index"].astype(float), -1, 240
    )
    day_index = year * 365.25 + day_of_year
    promo2_start = merged["promo2_start_day_index"].astype(float)
    promo2_running = (merged[columns.PROMO2] == 1) & (day_index >= promo2_start)
    month_flags = np.column_stack(
        [merged[f"promo2_month_{n}"].astype(bool) for n in range(1, 13)]
    ).reshape(len(store_id), 12)
    in_promo2_month = month_flags[np.arange(len(store_id)), month - 1]
    features["promo2_active_month"] = (promo2_running & in_promo2_month).astype(int)
    features["promo2_weeks_running"] = np.where(promo2_running, (day_index - promo2_start) / 7, -1)
    features["promo2_period"] = merged["promo2_period"]
    for name in (
        columns.STORE_TYPE,
        columns.ASSORTMENT,
        columns.STATE,
        columns.COMPETITION_DISTANCE,
    ):
        features[name] = merged[name]
    for name in [*tables.by_store.columns, "store_weekday_effect"]:
        features[name] = merged[name]
    for name in _proximity_columns(merged):
        features[name] = _filled(merged[name], _cap_of(name))
    return features


class KeyedTable:
    """A table's rows by their unique key tuples, for lookups (left joins) of many rows.

    The keys are packed and sorted and the columns read once, when it is built: a model
    keeps those of its profile and statistics (`StoreTables`), so a request pays only its
    binary searches, not a sort of the table's keys.
    """

    def __init__(self, table: pd.DataFrame, keys: list[str]) -> None:
        self.keys = [table[key].to_numpy() for key in keys]
        self.columns = {
            str(name): table[name].to_numpy() for name in table.columns if name not in keys
        }
        codes = _key_codes(self.keys)
        self._order = None if codes is None else np.argsort(codes, kind="stable")
        self._sorted = None if codes is None or self._order is None else codes[self._order]
        self._index: pd.Index | None = None

    def __len__(self) -> int:
        return len(self.keys[0])

    def positions(self, wanted: list[np.ndarray]) -> np.ndarray:
        """Each wanted key tuple's row in the table, -1 where it has none."""
        wanted_codes = _key_codes(wanted)
        if self._sorted is None or self._order is None or wanted_codes is None:
            return self._pandas_index().get_indexer(
                pd.Index(wanted[0]) if len(wanted) == 1 else pd.MultiIndex.from_arrays(wanted)
            )
        # Binary search over the sorted codes: building a pandas (multi-)index of the table
        # per call cost more than the whole lookup for a request of a few rows.
        if not len(self._sorted):
            return np.full(len(wanted_codes), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted, wanted_codes), len(self._sorted) - 1)
        found: np.ndarray = np.where(self._sorted[at] == wanted_codes, self._order[at], -1).astype(
            np.int64
        )
        return found

    def lookup(
        self, wanted: list[np.ndarray], names: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The other columns (or `names` of them) for each wanted key tuple, as arrays by name.

        Rows without a match get missing values, with a left merge's dtypes (ints as floats,
        booleans as objects).
        """
        position = self.positions(wanted)
        found = bool((position >= 0).all())
        return {
            name: _taken(self.columns[name], position, found)
            for name in (self.columns if names is None else names)
        }

    def _pandas_index(self) -> pd.Index:
        """For keys that do not pack into integers (built on first use)."""
        if self._index is None:
            self._index = (
                pd.Index(self.keys[0])
                if len(self.keys) == 1
                else pd.MultiIndex.from_arrays(self.keys)
            )
        return self._index


@dataclass(frozen=True)
class StoreTables:
    """The store profile and statistics keyed as `feature_columns` reads them; a model builds
    them once, not per request (sorting a 2,500-series shard's weekday effects per request
    cost more than a one-series request's lookups)."""

    profile: KeyedTable
    by_store: KeyedTable
    by_weekday: KeyedTable

    @classmethod
    def of(cls, profile: pd.DataFrame, stats: StoreStats) -> StoreTables:
        """The tables of `store_profile(stores)` and the statistics of the training window."""
        return cls(
            profile=KeyedTable(profile, [columns.STORE_ID]),
            by_store=KeyedTable(stats.by_store, [columns.STORE_ID]),
            by_weekday=KeyedTable(stats.by_weekday, [columns.STORE_ID, columns.DAY_OF_WEEK]),
        )


# Key columns pack into one int64: the first in the high half, the second (a day number or
# a small code) in the low 32 bits.
_KEY_LIMIT = 2**31


def _key_codes(keys: list[np.ndarray]) -> np.ndarray | None:
    """One int64 per key tuple, ordered like the tuples; None for keys that do not pack
    (non-integers, dates with a time of day, values too large)."""
    parts = []
    for values in keys:
        if values.dtype.kind == "M":
            nanoseconds = values.astype("datetime64[ns]").view(np.int64)
            if (nanoseconds % _NANOSECONDS_PER_DAY != 0).any():
                return None
            packed = nanoseconds // _NANOSECONDS_PER_DAY
        elif values.dtype.kind in "iu":
            packed = values.astype(np.int64)
        else:
            return None
        if len(packed) and np.abs(packed).max() >= _KEY_LIMIT:
            return None
        parts.append(packed)
    if len(parts) == 1:
        return parts[0]
    if len(parts) != 2:
        return None
    return parts[0] * (2 * _KEY_LIMIT) + (parts[1] + _KEY_LIMIT)


_NANOSECONDS_PER_DAY = 86_400 * 10**9


def _taken(values: np.ndarray, position: np.ndarray, found: bool) -> np.ndarray:
    """`values` at `position`; missing (-1) as a pandas left join gives them."""
    taken: np.ndarray
    if found:
        taken = values[position]
        return taken
    missing = position < 0
    if values.dtype.kind in "iu":
        taken = values.astype(float)[position]
        taken[missing] = np.nan
    elif values.dtype.kind == "f":
        taken = values[position]
        taken[missing] = np.nan
    elif values.dtype.kind == "M":
        taken = values[position]
        taken[missing] = np.datetime64("NaT")
    else:
        taken = values.astype(object)[position]
        taken[missing] = np.nan
    return taken


def _filled(values: np.ndarray, cap: int) -> np.ndarray:
    """Missing proximities (a row outside the calendar) as the cap, like `Series.fillna`."""
    if values.dtype.kind != "f" or not np.isnan(values).any():
        return values
    filled: np.ndarray = np.where(np.isnan(values), cap, values)
    return filled


def _code_array(values: np.ndarray, categories: tuple[str, ...]) -> np.ndarray:
    """`_codes` of an array of strings."""
    codes: np.ndarray = pd.Index(categories).get_indexer(pd.Index(values)).astype("int64")
    return codes


def _day_numbers(dates: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 (floored) of datetime64 values."""
    day_numbers: np.ndarray = dates.astype("datetime64[ns]").view(np.int64) // _NANOSECONDS_PER_DAY
    return day_numbers


def _state_days(
    flags: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, _Groups, list[np.ndarray]]:
    """States' holiday and school-holiday flags (`state_flags`) one row per (state, date),
    sorted by both (the order the calendar's scans need), with their groups."""
    # Built with numpy rather than pandas' groupby and column assignments, whose fixed cost
    # per call was most of a one-series request's calendar (a few dozen rows).
    keys, dates, flagged = _any_per_day(
        _array(flags, columns.STATE).astype(np.int64, copy=False),
        _array(flags, columns.SALES_DATE),
        [
            _array(flags, "state_holiday_day").astype(bool, copy=False),
            _array(flags, "school_holiday_day").astype(bool, copy=False),
        ],
    )
    return keys, dates, _Groups(keys, dates), flagged


def _store_days(rows: _Columns) -> tuple[np.ndarray, np.ndarray, _Groups, list[np.ndarray]]:
    """Stores' closed (a weekday not open) and promotion flags one row per (store, date),
    sorted by both, with their groups."""
    dates = _array(rows, columns.SALES_DATE)
    weekday = _day_numbers(dates) % 7  # 0 on Thursdays (1970-01-01), 3 on Sundays
    # The last row of a (store, date) given twice wins.
    keys, day_dates, flagged = _last_per_day(
        _array(rows, columns.STORE_ID),
        dates,
        [
            (_array(rows, columns.OPEN).astype(int) == 0) & (weekday != 3),
            _array(rows, columns.PROMO).astype(int) == 1,
        ],
    )
    return keys, day_dates, _Groups(keys, day_dates), flagged


def _last_flagged_day(groups: _Groups, flagged: np.ndarray) -> np.ndarray:
    """Each row's day number of its group's last flagged row up to it; NaN for none."""
    last = np.maximum.accumulate(np.where(flagged, groups.positions, -1))
    day: np.ndarray = np.where(last >= groups.first, groups.day_number[last], np.nan)
    return day


def _in_first_run(groups: _Groups, position: np.ndarray) -> np.ndarray:
    """Whether each row is in its group's first run (`position` from `_Groups.runs`)."""
    first_run: np.ndarray = groups.positions - position + 1 == groups.first
    return first_run


def _carried(
    keys: np.ndarray, values: Mapping[str, np.ndarray], wanted: np.ndarray
) -> dict[str, np.ndarray]:
    """`CalendarCarry` values of each wanted key (sorted `keys`), for a key without history
    what no history carries: no flagged day (NaN), no run (0), no promotion."""
    if not len(keys):
        keys, values = (
            np.array([np.iinfo(np.int64).min]),
            {
                name: np.full(1, np.nan if column.dtype.kind == "f" else 0, dtype=column.dtype)
                for name, column in values.items()
            },
        )
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    found = keys[at] == wanted
    return {
        name: np.where(found, column[at], np.nan if column.dtype.kind == "f" else 0).astype(
            column.dtype, copy=False
        )
        for name, column in values.items()
    }


def _proximity_after(
    groups: _Groups, event: str, flagged: np.ndarray, cap: int, carry: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """`_proximity` of rows after a history whose last flagged day of `event` per row's group
    is `carry[event]` (NaN: none): only the days since it reach back into the history."""
    proximity = _proximity(groups, event, flagged, cap)
    after = f"days_after_{event}"
    # Below the cap only when the history's day is nearer than any of the rows' own.
    proximity[after] = np.fmin(proximity[after], groups.day_number - carry[event])
    return proximity


def _any_per_day(
    keys: np.ndarray, dates: np.ndarray, flags: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """One row per (key, date), sorted by both, each flag true when any of its rows' is."""
    order, starts = _sorted_days(keys, dates)
    return (
        keys[order][starts],
        dates[order][starts],
        [
            np.logical_or.reduceat(flag[order], np.flatnonzero(starts)) if len(flag) else flag
            for flag in flags
        ],
    )


def _last_per_day(
    keys: np.ndarray, dates: np.ndarray, values: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """One row per (key, date), sorted by both, with the values of its last row."""
    order, starts = _sorted_days(keys, dates)
    ends = np.append(starts[1:], True) if len(starts) else starts
    last = order[ends]
    return keys[last], dates[last], [value[last] for value in values]


def _sorted_days(keys: np.ndarray, dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorting rows by key then date (stable), and where each (key, date) starts."""
    order = np.lexsort((dates, keys))
    sorted_keys, sorted_dates = keys[order], dates[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (sorted_keys[1:] != sorted_keys[:-1]) | (sorted_dates[1:] != sorted_dates[:-1])
    return order, starts


class _Groups:
    """Positions of rows sorted by a group key, then by date: each row's group's first and last
    row and its day number, for per-group scans in numpy (pandas' groupby costs about 1 ms per
    call, and a calendar makes dozens per request)."""

    def __init__(self, keys: np.ndarray, dates: np.ndarray) -> None:
        count = len(keys)
        self.positions = np.arange(count)
        # Days since 1970-01-01, as floats like the gaps computed from them.
        self.day_number = _day_numbers(dates).astype(float)
        starts = np.ones(count, dtype=bool)
        starts[1:] = keys[1:] != keys[:-1]
        self.is_first = starts
        self.first = np.maximum.accumulate(np.where(starts, self.positions, 0))
        ends = np.ones(count, dtype=bool)
        ends[:-1] = starts[1:]
        self.is_last = ends
        self.last = np.minimum.accumulate(np.where(ends, self.positions, count)[::-1])[::-1]

    def previous(self, values: np.ndarray) -> np.ndarray:
        """Each row's previous row's value in its group; False on a group's first row."""
        shifted = np.zeros(len(values), dtype=bool)
        shifted[1:] = values[:-1]
        return shifted & ~self.is_first

    def following(self, values: np.ndarray) -> np.ndarray:
        """Each row's next row's value in its group; False on a group's last row."""
        shifted = np.zeros(len(values), dtype=bool)
        shifted[:-1] = values[1:]
        return shifted & ~self.is_last

    def runs(self, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row, its 1-based position in its run of equal flags within its group, and the
        run's length."""
        count = len(flags)
        starts = self.is_first.copy()
        starts[1:] |= flags[1:] != flags[:-1]
        run = np.cumsum(starts) - 1
        start_of_run = np.flatnonzero(starts)
        position = self.positions - start_of_run[run] + 1
        length = np.diff(np.append(start_of_run, count))[run]
        return position, length


def _proximity(groups: _Groups, event: str, flagged: np.ndarray, cap: int) -> dict[str, np.ndarray]:
    """`days_after_<event>`/`days_before_<event>` of rows sorted by group, then date: the
    days since the group's last flagged day (that day included) and until its next, capped at
    `cap` (also when there is none)."""
    day_number = groups.day_number
    count = len(flagged)
    last = np.maximum.accumulate(np.where(flagged, groups.positions, -1))
    following = np.minimum.accumulate(np.where(flagged, groups.positions, count)[::-1])[::-1]
    has_last = last >= groups.first
    has_following = following <= groups.last
    after = np.full(count, float(cap))
    after[has_last] = np.minimum(day_number[has_last] - day_number[last[has_last]], cap)
    before = np.full(count, float(cap))
    before[has_following] = np.minimum(
        day_number[following[has_following]] - day_number[has_following], cap
    )
    return {f"days_after_{event}": after, f"days_before_{event}": before}


def _proximity_columns(names: Iterable[object]) -> list[str]:
    return [str(name) for name in names if str(name).startswith("days_")]


def _cap_of(name: str) -> int:
    if name.startswith(("days_into_", "days_left_")):
        return 0
    return REOPENING_CAP_DAYS if "long_closure" in name else PROXIMITY_CAP_DAYS


def _codes(values: pd.Series, categories: tuple[str, ...]) -> pd.Series:
    """Category codes (-1 for missing or unknown), stable across fits."""
    return pd.Series(
        pd.Categorical(
            values.astype(object).where(values.notna(), None), categories=categories
        ).codes,
        index=values.index,
    ).astype("int64")


def _first_interval_month(value: str, months: tuple[str, ...]) -> int:
    """1, 2 or 3 for the Promo2 schedules starting in Jan, Feb or Mar; 0 when none."""
    first = value.split(",", maxsplit=1)[0] if value else ""
    return months.index(first) + 1 if first in months else 0
