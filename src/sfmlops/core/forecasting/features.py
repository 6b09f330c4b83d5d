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
        state_of = profile.set_index(columns.STORE_ID)[columns.STATE]
        frame = rows[
            [
                columns.STORE_ID,
                columns.SALES_DATE,
                columns.OPEN,
                columns.PROMO,
                columns.STATE_HOLIDAY,
                columns.SCHOOL_HOLIDAY,
            ]
        ].copy()
        frame[columns.STATE] = frame[columns.STORE_ID].map(state_of).fillna(-1).astype(int)
        frame["state_holiday_day"] = frame[columns.STATE_HOLIDAY].astype(str) != "0"
        frame["school_holiday_day"] = frame[columns.SCHOOL_HOLIDAY].astype(int) == 1
        state_days = (
            frame.groupby([columns.STATE, columns.SALES_DATE])[
                ["state_holiday_day", "school_holiday_day"]
            ]
            .max()
            .reset_index()
        )
        state_days = _with_proximity(
            state_days,
            columns.STATE,
            {"state_holiday": "state_holiday_day", "school_holiday": "school_holiday_day"},
            PROXIMITY_CAP_DAYS,
        )
        state_days = _with_run_position(
            state_days, columns.STATE, "school_holiday_day", "school_holiday"
        )
        weekday = frame[columns.SALES_DATE].dt.dayofweek + 1
        frame["closed_weekday"] = (frame[columns.OPEN].astype(int) == 0) & (weekday != 7)
        store_days = frame[
            [columns.STORE_ID, columns.SALES_DATE, "closed_weekday", columns.PROMO]
        ].sort_values([columns.STORE_ID, columns.SALES_DATE])
        store_days = store_days.drop_duplicates([columns.STORE_ID, columns.SALES_DATE], keep="last")
        promo = store_days[columns.PROMO].astype(int) == 1
        previous_promo = promo.groupby(store_days[columns.STORE_ID]).shift(fill_value=False)
        following_promo = promo.groupby(store_days[columns.STORE_ID]).shift(-1, fill_value=False)
        # A promotion runs for days in a row (Rossmann: Monday to Friday, every other week):
        # where a day sits in that cycle, not only whether it has one.
        store_days["promo_start_day"] = promo & ~previous_promo
        store_days["promo_end_day"] = promo & ~following_promo
        store_days = _with_proximity(
            store_days,
            columns.STORE_ID,
            {"promo_start": "promo_start_day", "promo_end": "promo_end_day"},
            PROXIMITY_CAP_DAYS,
        )
        run = (
            store_days["closed_weekday"]
            != store_days.groupby(columns.STORE_ID)["closed_weekday"].shift()
        ).cumsum()
        run_length = store_days.groupby(run)["closed_weekday"].transform("size")
        store_days["long_closure_day"] = store_days["closed_weekday"] & (
            run_length >= LONG_CLOSURE_DAYS
        )
        store_days = _with_proximity(
            store_days, columns.STORE_ID, {"closure": "closed_weekday"}, PROXIMITY_CAP_DAYS
        )
        store_days = _with_proximity(
            store_days, columns.STORE_ID, {"long_closure": "long_closure_day"}, REOPENING_CAP_DAYS
        )
        keep_state = [columns.STATE, columns.SALES_DATE, *_proximity_columns(state_days)]
        keep_store = [columns.STORE_ID, columns.SALES_DATE, *_proximity_columns(store_days)]
        return cls(state_days=state_days[keep_state], store_days=store_days[keep_store])


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
    frame = pd.DataFrame(index=rows.index)
    frame[columns.STORE_ID] = rows[columns.STORE_ID].astype("int64")
    frame[columns.DAY_OF_WEEK] = date.dt.dayofweek + 1
    frame["day_of_month"] = date.dt.day
    frame["month"] = date.dt.month
    frame["year"] = date.dt.year
    frame["day_of_year"] = date.dt.dayofyear
    frame["week_of_year"] = date.dt.isocalendar().week.astype(int).to_numpy()
    frame[columns.PROMO] = rows[columns.PROMO].astype(int)
    frame[columns.STATE_HOLIDAY] = _codes(
        rows[columns.STATE_HOLIDAY].astype(str), columns.STATE_HOLIDAY_CODES
    )
    frame[columns.SCHOOL_HOLIDAY] = rows[columns.SCHOOL_HOLIDAY].astype(int)

    # One lookup per table instead of a chain of merges: each merge copied every column
    # gathered so far (most of a shard fit's feature-building time at 2,500 series).
    store_id = frame[columns.STORE_ID].to_numpy()
    from_profile = _lookup(profile, [columns.STORE_ID], [store_id])
    merged = pd.concat(
        [
            from_profile,
            _lookup(stats.by_store, [columns.STORE_ID], [store_id]),
            _lookup(
                stats.by_weekday,
                [columns.STORE_ID, columns.DAY_OF_WEEK],
                [store_id, frame[columns.DAY_OF_WEEK].to_numpy()],
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
    merged.index = frame.index

    month_index = (date.dt.year * 12 + date.dt.month - 1).astype(float)
    frame["competition_months_open"] = (month_index - merged["competition_open_month_index"]).clip(
        lower=-1, upper=240
    )
    day_index = date.dt.year * 365.25 + date.dt.dayofyear
    promo2_running = (merged[columns.PROMO2] == 1) & (day_index >= merged["promo2_start_day_index"])
    month_flags = merged[[f"promo2_month_{n}" for n in range(1, 13)]].to_numpy(dtype=bool)
    in_promo2_month = month_flags[np.arange(len(frame)), date.dt.month.to_numpy() - 1]
    frame["promo2_active_month"] = (promo2_running & in_promo2_month).astype(int)
    frame["promo2_weeks_running"] = np.where(
        promo2_running, (day_index - merged["promo2_start_day_index"]) / 7, -1
    )
    frame["promo2_period"] = merged["promo2_period"]
    for name in (
        columns.STORE_TYPE,
        columns.ASSORTMENT,
        columns.STATE,
        columns.COMPETITION_DISTANCE,
    ):
        frame[name] = merged[name]
    statistics = [n for n in stats.by_store.columns if n != columns.STORE_ID]
    for name in [*statistics, "store_weekday_effect"]:
        frame[name] = merged[name]
    for name in _proximity_columns(merged):
        frame[name] = merged[name].fillna(_cap_of(name))
    return frame


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


def _with_proximity(
    days: pd.DataFrame, group: str, events: dict[str, str], cap: int
) -> pd.DataFrame:
    """Add `days_after_<event>`/`days_before_<event>` per group, capped at `cap` days."""
    days = days.sort_values([group, columns.SALES_DATE]).reset_index(drop=True)
    day_number = (days[columns.SALES_DATE] - pd.Timestamp("1970-01-01")).dt.days.astype(float)
    for event, flag in events.items():
        event_day = day_number.where(days[flag].astype(bool))
        last = event_day.groupby(days[group]).ffill()
        following = event_day.groupby(days[group]).bfill()
        days[f"days_after_{event}"] = (day_number - last).clip(upper=cap).fillna(cap)
        days[f"days_before_{event}"] = (following - day_number).clip(upper=cap).fillna(cap)
    return days


def _with_run_position(days: pd.DataFrame, group: str, flag: str, event: str) -> pd.DataFrame:
    """Add `days_into_<event>`/`days_left_<event>`: the position in a run of flagged days.

    1 on a run's first (last) day, 0 outside runs, capped at `RUN_CAP_DAYS`: the start of the
    summer holidays is not their end.
    """
    days = days.sort_values([group, columns.SALES_DATE]).reset_index(drop=True)
    flagged = days[flag].astype(bool)
    run = (flagged != flagged.groupby(days[group]).shift()).cumsum()
    position = days.groupby(run).cumcount() + 1
    length = days.groupby(run)[flag].transform("size")
    days[f"days_into_{event}"] = np.where(flagged, position.clip(upper=RUN_CAP_DAYS), 0)
    days[f"days_left_{event}"] = np.where(
        flagged, (length - position + 1).clip(upper=RUN_CAP_DAYS), 0
    )
    return days


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
