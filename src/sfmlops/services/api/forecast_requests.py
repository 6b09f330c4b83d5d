"""Forecast requests as the API takes them: one series' (`SeriesRequest`) or a batch's, as
columns (`ForecastBatch`), with the caller's covariates matched to the days asked for and
where each covariate of a day comes from (the caller, the plan or a default).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from sfmlops.core import columns
from sfmlops.core.forecasting.bundle import (
    ASSUMED_OPEN,
    ASSUMED_PROMO,
    ASSUMED_SCHOOL_HOLIDAY,
    ASSUMED_STATE_HOLIDAY,
)
from sfmlops.core.forecasting.plan import FROM_CALLER, FROM_DEFAULT, FROM_PLAN, PlanByStore

# Most days one series may ask for. Intervals are calibrated on the first
# CALIBRATED_HORIZON_DAYS days after the training history only; later days are answered and
# flagged (`beyond_calibrated_horizon`).
MAX_REQUEST_DAYS = 366
DEFAULT_HORIZON_DAYS = 7
# Most series-days one batch may ask for: every Rossmann store for about three months.
MAX_BATCH_FORECAST_DAYS = 100_000
# The contract's name for a forecast object's day (`schemas.ForecastDay.date`).
FORECAST_DAY = "date"
COVARIATES = (columns.OPEN, columns.PROMO, columns.STATE_HOLIDAY, columns.SCHOOL_HOLIDAY)
# Where a forecast day's covariate came from (`schemas.ForecastDay.covariate_sources`).
COVARIATE_FROM_CALLER = FROM_CALLER
COVARIATE_FROM_PLAN = FROM_PLAN
COVARIATE_DEFAULT = FROM_DEFAULT
ASSUMPTIONS = {
    columns.OPEN: ASSUMED_OPEN,
    columns.PROMO: ASSUMED_PROMO,
    columns.STATE_HOLIDAY: ASSUMED_STATE_HOLIDAY,
    columns.SCHOOL_HOLIDAY: ASSUMED_SCHOOL_HOLIDAY,
}
_NUMERIC_COVARIATES = (columns.OPEN, columns.PROMO, columns.SCHOOL_HOLIDAY)

SeriesKey = tuple[int, str]


class UnknownSeriesError(LookupError):
    """The champion has no model for a store or one of its products (HTTP 404)."""


class InvalidForecastRequestError(ValueError):
    """Dates or covariates the champion cannot forecast (HTTP 422)."""


@dataclass(frozen=True)
class SeriesRequest:
    """One series to forecast on the given days, with what the caller knows about them.

    `covariates` maps a day to the covariates the caller gives for it (`open`, `promo`,
    `state_holiday`, `school_holiday`; any may be missing), `planned` to those of the plan
    (`with_plan`); a covariate neither gives is assumed.
    """

    store_id: int
    product_id: str
    dates: tuple[dt.date, ...]
    covariates: Mapping[dt.date, Mapping[str, Any]] = field(default_factory=dict)
    planned: Mapping[dt.date, Mapping[str, Any]] = field(default_factory=dict)

    def known(self, day: dt.date, name: str) -> Any:
        """A covariate's value given by the caller, else by the plan, else None."""
        given = self.covariates.get(day, {}).get(name)
        return given if given is not None else self.planned.get(day, {}).get(name)

    def known_days(self) -> list[tuple[Any, ...]]:
        """Per day, each of `COVARIATES`' `known` value (in that order)."""
        return self.known_and_sources()[0]

    def known_and_sources(self) -> tuple[list[tuple[Any, ...]], list[Mapping[str, str]]]:
        """Per day, each of `COVARIATES`' `known` value (in that order), and where each came
        from (`COVARIATE_FROM_CALLER`, `COVARIATE_FROM_PLAN` or `COVARIATE_DEFAULT`).

        The sources are shared read-only mappings, one per combination: an every-store
        request has 7,805 days but a handful of distinct combinations.
        """
        known: list[tuple[Any, ...]] = []
        sources: list[Mapping[str, str]] = []
        for day in self.dates:
            given = self.covariates.get(day)
            planned = self.planned.get(day)
            # The common cases read a day's mapping once, in C (`map`); only a day with both
            # the caller's and the plan's covariates goes covariate by covariate.
            if not planned:
                values = tuple(map(given.get, COVARIATES)) if given else _NOTHING_KNOWN
                source = _shared_sources(_CALLER_OR_DEFAULT, values, values, _NOTHING_KNOWN)
            elif not given:
                values = tuple(map(planned.get, COVARIATES))
                source = _shared_sources(_PLAN_OR_DEFAULT, values, _NOTHING_KNOWN, values)
            else:
                caller = tuple(map(given.get, COVARIATES))
                plan = tuple(map(planned.get, COVARIATES))
                values = tuple(
                    mine if mine is not None else theirs
                    for mine, theirs in zip(caller, plan, strict=True)
                )
                source = _sources(caller, plan)
            known.append(values)
            sources.append(source)
        return known, sources


_NOTHING_KNOWN: tuple[Any, ...] = (None,) * len(COVARIATES)
# Source mappings shared by the days whose known values came from one side (the caller's or
# the plan's): keyed by those values, whose missing ones decide the sources.
_CALLER_OR_DEFAULT: dict[tuple[Any, ...], Mapping[str, str]] = {}
_PLAN_OR_DEFAULT: dict[tuple[Any, ...], Mapping[str, str]] = {}
# Validated covariates make a few dozen combinations; the bound is for any other caller.
_MOST_SHARED_SOURCES = 4_096


def _shared_sources(
    shared: dict[tuple[Any, ...], Mapping[str, str]],
    values: tuple[Any, ...],
    caller: tuple[Any, ...],
    plan: tuple[Any, ...],
) -> Mapping[str, str]:
    source = shared.get(values)
    if source is None:
        source = _sources(caller, plan)
        if len(shared) < _MOST_SHARED_SOURCES:
            shared[values] = source
    return source


def _sources(caller: tuple[Any, ...], plan: tuple[Any, ...]) -> Mapping[str, str]:
    """Where each covariate of a day came from, given the caller's and the plan's values."""
    return {
        name: COVARIATE_FROM_CALLER
        if mine is not None
        else COVARIATE_FROM_PLAN
        if theirs is not None
        else COVARIATE_DEFAULT
        for name, mine, theirs in zip(COVARIATES, caller, plan, strict=True)
    }


def with_plan(request: SeriesRequest, plan: PlanByStore) -> SeriesRequest:
    """The request with its store's planned days attached (those it asks for)."""
    store_plan = plan.get(request.store_id)
    if not store_plan:
        return request
    planned = {day: store_plan[day] for day in request.dates if day in store_plan}
    return replace(request, planned=planned) if planned else request


_UNIX_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


# Sorts (series, day) pairs by one integer: above any day's ordinal (9999-12-31 is 3,652,059).
DAYS_PER_SERIES_KEY = 4_000_000
# Where a covariate of a day came from, as a code (`COVARIATE_SOURCES[code]`).
SOURCE_CODE_CALLER, SOURCE_CODE_PLAN, SOURCE_CODE_DEFAULT = 0, 1, 2
COVARIATE_SOURCES = (COVARIATE_FROM_CALLER, COVARIATE_FROM_PLAN, COVARIATE_DEFAULT)


@dataclass(frozen=True)
class PlanColumns:
    """The plan as sorted (store, day) keys and one column per covariate, so a batch finds
    its planned days in numpy (`ForecastBatch.with_plan`): looking them up day by day in
    the nested plan cost about 7 ms of an every-store request with a full plan.

    Attributes:
        keys: (planned days,) int64 `store_id * DAYS_PER_SERIES_KEY + day ordinal`, sorted.
        values: Per covariate (`COVARIATES`), (planned days,) object array in `keys`' order.
    """

    keys: np.ndarray
    values: Mapping[str, np.ndarray]

    @classmethod
    def of(cls, plan: PlanByStore) -> PlanColumns:
        entries = [
            (store_id * DAYS_PER_SERIES_KEY + day.toordinal(), covariates)
            for store_id, days in plan.items()
            for day, covariates in days.items()
        ]
        entries.sort(key=lambda entry: entry[0])
        return cls(
            keys=np.array([key for key, _ in entries], dtype=np.int64),
            values={
                name: np.array([covariates.get(name) for _, covariates in entries], dtype=object)
                for name in COVARIATES
            },
        )


@dataclass(frozen=True)
class ForecastBatch:
    """Series to forecast, as columns: series i asks for rows `starts[i]` to
    `starts[i] + day_counts[i]` of the per-row arrays (its days, in the order asked).

    Attributes:
        store_ids: (series,) int64.
        product_ids: (series,) product ids.
        day_counts: (series,) days asked for, each at least 1.
        day_ordinals: (rows,) the days as `dt.date.toordinal()`.
        given: Per covariate (`COVARIATES`), (rows,) object array: the caller's value or None.
        covariates_given: (series,) True where the caller gave covariates (for any day, with
            or without values): such a series is predicted, never sliced.
        stray_days: (series,) ordinal of the earliest day the caller gave covariates for but
            did not ask for, or -1.
        planned: Per covariate, (rows,) object array: the stored plan's value or None
            (`with_plan`); empty before the plan is attached.
    """

    store_ids: np.ndarray
    product_ids: Sequence[str]
    day_counts: np.ndarray
    day_ordinals: np.ndarray
    given: Mapping[str, np.ndarray]
    covariates_given: np.ndarray
    stray_days: np.ndarray
    planned: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of_columns(
        cls,
        store_ids: Sequence[int],
        product_ids: Sequence[str],
        day_counts: Sequence[int],
        day_ordinals: Sequence[int],
        covariate_series: Sequence[int],
        covariate_ordinals: Sequence[int],
        covariate_values: Mapping[str, Sequence[Any]],
    ) -> ForecastBatch:
        """A batch from its series, their days, and the caller's covariates as entries (the
        series' index, the day, each covariate's value or None), matched to the days in
        numpy.

        Raises:
            InvalidForecastRequestError: A series' covariates give a day twice (the first
                such series named).
        """
        counts = np.asarray(day_counts, dtype=np.int64)
        ordinals = np.asarray(day_ordinals, dtype=np.int64)
        rows = len(ordinals)
        entry_series = np.asarray(covariate_series, dtype=np.int64)
        entry_ordinals = np.asarray(covariate_ordinals, dtype=np.int64)
        entry_keys = entry_series * DAYS_PER_SERIES_KEY + entry_ordinals
        sorted_keys = np.sort(entry_keys)
        twice = sorted_keys[1:][sorted_keys[1:] == sorted_keys[:-1]]
        if len(twice):
            raise InvalidForecastRequestError(
                f"store {store_ids[int(twice.min() // DAYS_PER_SERIES_KEY)]}: covariates give "
                "a date twice"
            )
        row_keys = np.repeat(np.arange(len(counts)), counts) * DAYS_PER_SERIES_KEY + ordinals
        # A day asked for twice (refused later) takes the covariates on its first row.
        order = np.argsort(row_keys, kind="stable")
        position = np.searchsorted(row_keys[order], entry_keys).clip(max=max(rows - 1, 0))
        found = (row_keys[order][position] == entry_keys) if rows else np.zeros(0, dtype=bool)
        target = order[position[found]]
        given = {}
        for name in COVARIATES:
            column = np.full(rows, None, dtype=object)
            column[target] = np.asarray(covariate_values[name], dtype=object)[found]
            given[name] = column
        stray = np.full(len(counts), np.iinfo(np.int64).max)
        np.minimum.at(stray, entry_series[~found], entry_ordinals[~found])
        return cls(
            store_ids=np.asarray(store_ids, dtype=np.int64),
            product_ids=list(product_ids),
            day_counts=counts,
            day_ordinals=ordinals,
            given=given,
            covariates_given=np.bincount(entry_series, minlength=len(counts)) > 0,
            stray_days=np.where(stray == np.iinfo(np.int64).max, -1, stray),
        )

    @classmethod
    def of(cls, requests: Sequence[SeriesRequest]) -> ForecastBatch:
        """A batch of per-series requests, with the plan they carry (`with_plan`)."""
        entries = [
            (index, day, covariates)
            for index, request in enumerate(requests)
            for day, covariates in request.covariates.items()
        ]
        batch = cls.of_columns(
            [request.store_id for request in requests],
            [request.product_id for request in requests],
            [len(request.dates) for request in requests],
            [day.toordinal() for request in requests for day in request.dates],
            [index for index, _, _ in entries],
            [day.toordinal() for _, day, _ in entries],
            {name: [given.get(name) for _, _, given in entries] for name in COVARIATES},
        )
        if not any(request.planned for request in requests):
            return batch
        planned = {
            name: np.array(
                [
                    request.planned.get(day, {}).get(name)
                    for request in requests
                    for day in request.dates
                ],
                dtype=object,
            )
            for name in COVARIATES
        }
        return replace(batch, planned=planned)

    @property
    def starts(self) -> np.ndarray:
        """(series,) each series' first row."""
        return np.concatenate(([0], np.cumsum(self.day_counts)[:-1])).astype(np.int64)

    def keys(self) -> list[SeriesKey]:
        return list(zip(self.store_ids.tolist(), self.product_ids, strict=True))

    def dates(self, index: int) -> tuple[dt.date, ...]:
        """The days series `index` asks for."""
        start = int(self.starts[index])
        days = self.day_ordinals[start : start + int(self.day_counts[index])].tolist()
        return tuple(dt.date.fromordinal(day) for day in days)

    def series_request(self, index: int) -> SeriesRequest:
        """Series `index` as a request, without the caller's covariates (a slice's request)."""
        return SeriesRequest(int(self.store_ids[index]), self.product_ids[index], self.dates(index))

    def with_plan(self, plan: PlanColumns) -> ForecastBatch:
        """The batch with the plan's values for the days it asks for (`planned`)."""
        if not len(plan.keys):
            return self
        row_keys = np.repeat(self.store_ids, self.day_counts) * DAYS_PER_SERIES_KEY + (
            self.day_ordinals
        )
        position = np.searchsorted(plan.keys, row_keys).clip(max=len(plan.keys) - 1)
        found = plan.keys[position] == row_keys
        if not found.any():
            return self
        planned = {}
        for name in COVARIATES:
            column = np.full(len(row_keys), None, dtype=object)
            column[found] = plan.values[name][position[found]]
            planned[name] = column
        return replace(self, planned=planned)

    def take(
        self, series: Sequence[int], product_ids: Sequence[str] | None = None
    ) -> ForecastBatch:
        """The batch of the given series (in that order, repeats allowed), optionally under
        other product ids."""
        chosen = np.asarray(series, dtype=np.int64)
        counts = self.day_counts[chosen]
        total = int(counts.sum())
        firsts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        rows = np.repeat(self.starts[chosen], counts) + (
            np.arange(total) - np.repeat(firsts, counts)
        )
        return ForecastBatch(
            store_ids=self.store_ids[chosen],
            product_ids=list(product_ids)
            if product_ids is not None
            else [self.product_ids[index] for index in chosen.tolist()],
            day_counts=counts,
            day_ordinals=self.day_ordinals[rows],
            given={name: values[rows] for name, values in self.given.items()},
            covariates_given=self.covariates_given[chosen],
            stray_days=self.stray_days[chosen],
            planned={name: values[rows] for name, values in self.planned.items()},
        )

    def future(self) -> tuple[pd.DataFrame, np.ndarray]:
        """One future-covariates row per (series, day) in order, and (rows, covariate) where
        each covariate came from (`SOURCE_CODE_CALLER`, `SOURCE_CODE_PLAN`, `SOURCE_CODE_DEFAULT`)."""
        rows = len(self.day_ordinals)
        frame: dict[str, Any] = {
            columns.STORE_ID: np.repeat(self.store_ids, self.day_counts),
            columns.PRODUCT_ID: np.repeat(
                np.array(self.product_ids, dtype=object), self.day_counts
            ),
            columns.SALES_DATE: (self.day_ordinals - _UNIX_EPOCH_ORDINAL)
            .astype("datetime64[D]")
            .astype("datetime64[ns]"),
        }
        sources = np.full((rows, len(COVARIATES)), SOURCE_CODE_DEFAULT, dtype=np.int8)
        nothing = np.full(rows, None, dtype=object)
        for position, name in enumerate(COVARIATES):
            caller = self.given.get(name, nothing)
            plan = self.planned.get(name, nothing)
            from_caller = pd.notna(caller)
            from_plan = ~from_caller & pd.notna(plan)
            sources[from_caller, position] = SOURCE_CODE_CALLER
            sources[from_plan, position] = SOURCE_CODE_PLAN
            # Without any covariate given the future has none of their columns (all derived).
            if not (self.covariates_given.any() or self.planned):
                continue
            # Days without a value stay missing, so the bundle assumes them as it would a
            # missing column (and says so).
            values = np.where(from_caller, caller, plan)
            if name in _NUMERIC_COVARIATES:
                known = from_caller | from_plan
                numbers = np.full(rows, np.nan)
                numbers[known] = values[known].astype("float64")
                frame[name] = numbers
            else:
                frame[name] = values
        # Framed once: adding the covariates one by one cost a tenth of a one-series request.
        return pd.DataFrame(frame), sources
