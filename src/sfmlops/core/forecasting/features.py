"""Covariates for the global model: calendar, promotions, holidays, closures and store profile.

Everything a row's features use is either known in advance for that day (calendar, the
caller's open/promo/holiday covariates, store metadata) or a store statistic computed from
the history before the cutoff (`StoreStats`), so a model fitted on history up to a cutoff
never sees the days it forecasts.
"""

from __future__ import annotations

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
    def of_parts(cls, flags: pd.DataFrame, rows: pd.DataFrame) -> Calendar:
        """The calendar from states' holiday flags and the rows of the stores to look up.

        Args:
            flags: `state_flags` of every row the states' holidays come from; several such
                frames may be concatenated (a day is a holiday when any of them says so).
            rows: Covariate rows of the stores whose closures and promotions are looked up:
                all of each such store's rows, for its runs and proximities.
        """
        # groupby sorts by (state, date), the order the helpers below need.
        state_days = (
            flags.groupby([columns.STATE, columns.SALES_DATE])[
                ["state_holiday_day", "school_holiday_day"]
            ]
            .max()
            .reset_index()
        )
        state_groups = _Groups(state_days, columns.STATE)
        for event in ("state_holiday", "school_holiday"):
            _add_proximity(state_days, state_groups, event, f"{event}_day", PROXIMITY_CAP_DAYS)
        school = state_days["school_holiday_day"].to_numpy(dtype=bool)
        position, length = state_groups.runs(school)
        state_days["days_into_school_holiday"] = np.where(
            school, np.minimum(position, RUN_CAP_DAYS), 0
        )
        state_days["days_left_school_holiday"] = np.where(
            school, np.minimum(length - position + 1, RUN_CAP_DAYS), 0
        )

        weekday = rows[columns.SALES_DATE].dt.dayofweek + 1
        store_days = pd.DataFrame(
            {
                columns.STORE_ID: rows[columns.STORE_ID],
                columns.SALES_DATE: rows[columns.SALES_DATE],
                "closed_weekday": (rows[columns.OPEN].astype(int) == 0) & (weekday != 7),
                columns.PROMO: rows[columns.PROMO],
            }
        ).sort_values([columns.STORE_ID, columns.SALES_DATE])
        store_days = store_days.drop_duplicates(
            [columns.STORE_ID, columns.SALES_DATE], keep="last"
        ).reset_index(drop=True)
        store_groups = _Groups(store_days, columns.STORE_ID)
        promo = store_days[columns.PROMO].to_numpy().astype(int) == 1
        # A promotion runs for days in a row (Rossmann: Monday to Friday, every other week):
        # where a day sits in that cycle, not only whether it has one.
        store_days["promo_start_day"] = promo & ~store_groups.previous(promo)
        store_days["promo_end_day"] = promo & ~store_groups.following(promo)
        for event in ("promo_start", "promo_end"):
            _add_proximity(store_days, store_groups, event, f"{event}_day", PROXIMITY_CAP_DAYS)
        closed = store_days["closed_weekday"].to_numpy(dtype=bool)
        _, run_length = store_groups.runs(closed)
        store_days["long_closure_day"] = closed & (run_length >= LONG_CLOSURE_DAYS)
        _add_proximity(store_days, store_groups, "closure", "closed_weekday", PROXIMITY_CAP_DAYS)
        _add_proximity(
            store_days, store_groups, "long_closure", "long_closure_day", REOPENING_CAP_DAYS
        )
        keep_state = [columns.STATE, columns.SALES_DATE, *_proximity_columns(state_days)]
        keep_store = [columns.STORE_ID, columns.SALES_DATE, *_proximity_columns(store_days)]
        return cls(state_days=state_days[keep_state], store_days=store_days[keep_store])


def state_flags(rows: pd.DataFrame, profile: pd.DataFrame) -> pd.DataFrame:
    """Per (state, date) of `rows`: whether any of its stores reports a state or a school
    holiday (`Calendar.of_parts`' input)."""
    state_of = profile.set_index(columns.STORE_ID)[columns.STATE]
    flags = pd.DataFrame(
        {
            columns.STATE: rows[columns.STORE_ID].map(state_of).fillna(-1).astype(int),
            columns.SALES_DATE: rows[columns.SALES_DATE],
            "state_holiday_day": rows[columns.STATE_HOLIDAY].astype(str) != "0",
            "school_holiday_day": rows[columns.SCHOOL_HOLIDAY].astype(int) == 1,
        }
    )
    return (
        flags.groupby([columns.STATE, columns.SALES_DATE])[
            ["state_holiday_day", "school_holiday_day"]
        ]
        .max()
        .reset_index()
    )


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
    date = rows[columns.SALES_DATE]
    # Columns are gathered as arrays and framed once: assigning them one by one to a frame
    # cost about 40 µs each, most of a one-series request's feature building.
    store_id = rows[columns.STORE_ID].to_numpy().astype("int64")
    day_of_week = date.dt.dayofweek.to_numpy() + 1
    month = date.dt.month.to_numpy()
    year = date.dt.year.to_numpy()
    day_of_year = date.dt.dayofyear.to_numpy()
    features: dict[str, object] = {
        columns.STORE_ID: store_id,
        columns.DAY_OF_WEEK: day_of_week,
        "day_of_month": date.dt.day.to_numpy(),
        "month": month,
        "year": year,
        "day_of_year": day_of_year,
        "week_of_year": date.dt.isocalendar().week.to_numpy().astype(int),
        columns.PROMO: rows[columns.PROMO].to_numpy().astype(int),
        columns.STATE_HOLIDAY: _codes(
            rows[columns.STATE_HOLIDAY].astype(str), columns.STATE_HOLIDAY_CODES
        ).to_numpy(),
        columns.SCHOOL_HOLIDAY: rows[columns.SCHOOL_HOLIDAY].to_numpy().astype(int),
    }

    # One lookup per table instead of a chain of merges: each merge copied every column
    # gathered so far (most of a shard fit's feature-building time at 2,500 series).
    from_profile = _lookup(profile, [columns.STORE_ID], [store_id])
    merged = pd.concat(
        [
            from_profile,
            _lookup(stats.by_store, [columns.STORE_ID], [store_id]),
            _lookup(
                stats.by_weekday,
                [columns.STORE_ID, columns.DAY_OF_WEEK],
                [store_id, day_of_week],
            ),
            _lookup(
                calendar.state_days,
                [columns.STATE, columns.SALES_DATE],
                [from_profile[columns.STATE].to_numpy(), date.to_numpy()],
            ),
            _lookup(
                calendar.store_days,
                [columns.STORE_ID, columns.SALES_DATE],
                [store_id, date.to_numpy()],
            ),
        ],
        axis=1,
    )

    def looked_up(name: str) -> np.ndarray:
        values: np.ndarray = merged[name].to_numpy()
        return values

    month_index = (year * 12 + month - 1).astype(float)
    features["competition_months_open"] = np.clip(
        month_index - looked_up("competition_open_month_index").astype(float), -1, 240
    )
    day_index = year * 365.25 + day_of_year
    promo2_start = looked_up("promo2_start_day_index").astype(float)
    promo2_running = (looked_up(columns.PROMO2) == 1) & (day_index >= promo2_start)
    month_flags = merged[[f"promo2_month_{n}" for n in range(1, 13)]].to_numpy(dtype=bool)
    in_promo2_month = month_flags[np.arange(len(store_id)), month - 1]
    features["promo2_active_month"] = (promo2_running & in_promo2_month).astype(int)
    features["promo2_weeks_running"] = np.where(promo2_running, (day_index - promo2_start) / 7, -1)
    features["promo2_period"] = looked_up("promo2_period")
    for name in (
        columns.STORE_TYPE,
        columns.ASSORTMENT,
        columns.STATE,
        columns.COMPETITION_DISTANCE,
    ):
        features[name] = looked_up(name)
    statistics = [n for n in stats.by_store.columns if n != columns.STORE_ID]
    for name in [*statistics, "store_weekday_effect"]:
        features[name] = looked_up(name)
    for name in _proximity_columns(merged):
        features[name] = merged[name].fillna(_cap_of(name)).to_numpy()
    return pd.DataFrame(features, index=rows.index)


def _lookup(table: pd.DataFrame, keys: list[str], values: list[np.ndarray]) -> pd.DataFrame:
    """`table`'s other columns for each key tuple in `values` (a left join on unique keys).

    Rows without a match get missing values, with a left merge's dtypes (ints as floats).
    """
    if len(keys) == 1:
        index: pd.Index = pd.Index(table[keys[0]])
        wanted: pd.Index = pd.Index(values[0])
    else:
        index = pd.MultiIndex.from_frame(table[keys])
        wanted = pd.MultiIndex.from_arrays(values)
    position = index.get_indexer(wanted)
    found = table.drop(columns=keys).reset_index(drop=True)
    if (position >= 0).all():
        return found.take(position).reset_index(drop=True)
    return found.reindex(position).reset_index(drop=True)


class _Groups:
    """Positions of rows sorted by a group key, then by date: each row's group's first and last
    row and its day number, for per-group scans in numpy (pandas' groupby costs about 1 ms per
    call, and a calendar makes dozens per request)."""

    def __init__(self, days: pd.DataFrame, group: str) -> None:
        keys = days[group].to_numpy()
        count = len(keys)
        self.positions = np.arange(count)
        # Days since 1970-01-01, as floats like the gaps computed from them.
        self.day_number = (days[columns.SALES_DATE] - pd.Timestamp("1970-01-01")).dt.days.to_numpy(
            dtype=float
        )
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


def _add_proximity(days: pd.DataFrame, groups: _Groups, event: str, flag: str, cap: int) -> None:
    """Add `days_after_<event>`/`days_before_<event>` to `days` (sorted by group, then date):
    the days since the group's last flagged day (that day included) and until its next,
    capped at `cap` (also when there is none)."""
    flagged = days[flag].to_numpy(dtype=bool)
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
    days[f"days_after_{event}"] = after
    days[f"days_before_{event}"] = before


def _proximity_columns(frame: pd.DataFrame) -> list[str]:
    return [str(name) for name in frame.columns if str(name).startswith("days_")]


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
