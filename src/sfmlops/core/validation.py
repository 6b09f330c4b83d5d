"""Validation of sales records, future covariates and store metadata (pure: frames in, out).

One set of rules serves every way data comes in: file loading rejects a whole file
when any row fails, while the API and the stream job keep the valid records and
dead-letter the rest. Both read the same per-row issues from here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmlops.core import columns

ISSUE_COLUMNS = ("row", "column", "value", "reason")
_FLAG_VALUES = (0, 1)
# Plain decimal notation as written in CSV and JSON; no "inf", "nan" or thousands separators.
_NUMBER_PATTERN = r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$"
_MAX_SHOWN_VALUE = 60
MAX_PRODUCT_ID_LENGTH = 64  # the width of the database column
MAX_INTEGER = 2**31 - 1  # integer columns in the database are 32-bit


EARLIEST_SALES_DATE = dt.date(1990, 1, 1)
DEFAULT_DATE_MARGIN_DAYS = 1  # a store ahead of UTC may already close the next day
DEFAULT_MAX_DAILY_SALES = 1_000_000.0
DEFAULT_MAX_DAILY_CUSTOMERS = 100_000


def _tomorrow_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date() + dt.timedelta(days=DEFAULT_DATE_MARGIN_DAYS)


@dataclass(frozen=True)
class SalesLimits:
    """Bounds a plausible day of sales stays within; a record outside them is rejected.

    One mistyped year would otherwise move "today" (the latest sales date) to 2099 for every
    store. The defaults hold for any store; `for_today` builds them from settings.

    Attributes:
        latest_date: The last date a sale may have (default: tomorrow, UTC wall clock).
        earliest_date: The first date a sale may have.
        max_sales: Most sales one series may have in a day.
        max_customers: Most customers one store may have in a day.
    """

    latest_date: dt.date = field(default_factory=_tomorrow_utc)
    earliest_date: dt.date = EARLIEST_SALES_DATE
    max_sales: float = DEFAULT_MAX_DAILY_SALES
    max_customers: int = DEFAULT_MAX_DAILY_CUSTOMERS

    @classmethod
    def for_today(
        cls,
        margin_days: int = DEFAULT_DATE_MARGIN_DAYS,
        max_sales: float = DEFAULT_MAX_DAILY_SALES,
        max_customers: int = DEFAULT_MAX_DAILY_CUSTOMERS,
    ) -> SalesLimits:
        """Limits whose latest date is the UTC wall-clock date plus `margin_days`."""
        today = dt.datetime.now(dt.UTC).date()
        return cls(
            latest_date=today + dt.timedelta(days=margin_days),
            max_sales=max_sales,
            max_customers=max_customers,
        )


class MissingColumnsError(ValueError):
    """Raised when a frame lacks columns every record needs."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        super().__init__(f"missing required column(s): {', '.join(self.missing)}")


@dataclass(frozen=True)
class Validated:
    """The outcome of validating a frame.

    Attributes:
        valid: Typed, canonical rows that passed every check, indexed by their input position.
        issues: One row per problem: `row` (0-based input position), `column` (domain name),
            `value` (as received) and `reason`; sorted by row.
    """

    valid: pd.DataFrame
    issues: pd.DataFrame

    @property
    def ok(self) -> bool:
        """True when no record has an issue."""
        return self.issues.empty

    @property
    def rejected_rows(self) -> list[int]:
        """Input positions of the records that failed at least one check."""
        return sorted(set(self.issues["row"].tolist()))

    def reasons_by_row(self) -> dict[int, str]:
        """All reasons of each rejected record, joined into one sentence per row."""
        reasons: dict[int, list[str]] = {}
        for row, column, reason in zip(
            self.issues["row"].tolist(),
            self.issues["column"].tolist(),
            self.issues["reason"].tolist(),
            strict=True,
        ):
            reasons.setdefault(int(row), []).append(f"{column}: {reason}")
        return {row: "; ".join(parts) for row, parts in reasons.items()}


class _IssueLog:
    """Collects issues from vectorised checks."""

    def __init__(self, raw: pd.DataFrame) -> None:
        self._raw = raw
        self._parts: list[pd.DataFrame] = []

    def add(self, bad: pd.Series, column: str, reason: str | pd.Series) -> None:
        if not bad.any():
            return
        rows = np.flatnonzero(bad.to_numpy())
        values = (
            self._raw[column].iloc[rows] if column in self._raw else pd.Series([""] * len(rows))
        )
        reasons = reason.iloc[rows].to_numpy() if isinstance(reason, pd.Series) else reason
        self._parts.append(
            pd.DataFrame(
                {
                    "row": rows,
                    "column": column,
                    "value": [_shown(v) for v in values],
                    "reason": reasons,
                }
            )
        )

    def frame(self) -> pd.DataFrame:
        if not self._parts:
            return pd.DataFrame({name: pd.Series(dtype=object) for name in ISSUE_COLUMNS})
        issues = pd.concat(self._parts, ignore_index=True)
        return issues.sort_values(["row", "column"], kind="stable").reset_index(drop=True)

    def bad_rows(self) -> np.ndarray:
        if not self._parts:
            return np.empty(0, dtype=np.int64)
        return np.unique(np.concatenate([p["row"].to_numpy() for p in self._parts]))


def record_position(row: int) -> str:
    """An earlier record of a batch by its 0-based position, as the API's `index` names it."""
    return f"record {row}"


def validate_sales(
    raw: pd.DataFrame,
    known_store_ids: Collection[int],
    *,
    reject_duplicates: bool = True,
    limits: SalesLimits | None = None,
    position: Callable[[int], str] = record_position,
) -> Validated:
    """Check sales records and convert the valid ones to the canonical sales frame.

    Args:
        raw: Records with domain column names (see `columns.SALES_COLUMNS`); values may be
            strings as read from a file or Python objects as parsed from JSON.
        known_store_ids: Stores that exist in the store metadata.
        reject_duplicates: Reject a record whose (store, product, date) repeats an earlier
            record of the same frame; streams that re-deliver records turn this off and let
            the latest value win downstream.
        limits: Plausible dates and amounts (default `SalesLimits()`: up to tomorrow UTC,
            from 1990, at most 1,000,000 sales and 100,000 customers a day).
        position: How a message names an earlier record by its 0-based position (a file's
            reader names its line, see `record_position`).

    Returns:
        The valid rows (columns `columns.SALES_COLUMNS`) and the issues of the others.

    Raises:
        MissingColumnsError: When a required column is absent, so no record can be checked.
    """
    missing = [name for name in columns.REQUIRED_SALES_COLUMNS if name not in raw.columns]
    if missing:
        raise MissingColumnsError(missing)
    limits = limits or SalesLimits()
    raw = raw.reset_index(drop=True)
    log = _IssueLog(raw)

    def amounts(covariates: dict[str, pd.Series]) -> dict[str, pd.Series]:
        sales = _numbers(raw[columns.SALES], log, columns.SALES, minimum=0.0)
        log.add(
            (sales > limits.max_sales).astype(bool),
            columns.SALES,
            f"more than {limits.max_sales:,.0f} in a day (the configured bound)",
        )
        customers = (
            _integers(raw[columns.CUSTOMERS], log, columns.CUSTOMERS, minimum=0, allow_missing=True)
            if columns.CUSTOMERS in raw
            else pd.Series(pd.NA, index=raw.index, dtype="Int64")
        )
        log.add(
            (customers > limits.max_customers).fillna(False).astype(bool),
            columns.CUSTOMERS,
            f"more than {limits.max_customers:,} in a day (the configured bound)",
        )
        closed_with_sales = (covariates[columns.OPEN] == 0).fillna(False) & (sales > 0)
        log.add(
            closed_with_sales.astype(bool),
            columns.SALES,
            "sales on a closed day (open is 0): either the store was open or the sales are 0",
        )
        return {columns.SALES: sales, columns.CUSTOMERS: customers}

    covariates = _covariates(
        raw,
        log,
        known_store_ids,
        reject_duplicates=reject_duplicates,
        check_dates=lambda sales_date: _check_date_range(sales_date, log, limits),
        position=position,
    )
    canonical = pd.DataFrame({**covariates, **amounts(covariates)})
    valid = canonical[~canonical.index.isin(log.bad_rows())]
    return Validated(valid=_typed_sales(valid), issues=log.frame())


def validate_future(
    raw: pd.DataFrame,
    known_store_ids: Collection[int],
    *,
    after: dt.date | None = None,
    position: Callable[[int], str] = record_position,
) -> Validated:
    """Check future covariates (what is known in advance about days to forecast).

    The same rules as sales records for store, product, date, flags, holiday codes, weekday
    and duplicates; there are no amounts, and the dates lie ahead rather than behind.

    Args:
        raw: Records with domain column names (see `columns.FUTURE_COLUMNS`), values as read
            from a file or parsed from JSON.
        known_store_ids: Stores that exist in the store metadata.
        after: The last day of known history: every date must be later (forecasts start the
            day after it).

    Returns:
        The valid rows (columns `columns.FUTURE_COLUMNS`) and the issues of the others.

    Raises:
        MissingColumnsError: When a required column is absent, so no record can be checked.
    """
    required = [name for name in columns.FUTURE_COLUMNS if name != columns.PRODUCT_ID]
    missing = [name for name in required if name not in raw.columns]
    if missing:
        raise MissingColumnsError(missing)
    raw = raw.reset_index(drop=True)
    log = _IssueLog(raw)

    def not_after(sales_date: pd.Series) -> None:
        if after is not None:
            log.add(
                (sales_date <= pd.Timestamp(after)).fillna(False).astype(bool),
                columns.SALES_DATE,
                f"not after the data's end ({after.isoformat()}): forecasts start the day after",
            )

    covariates = _covariates(
        raw,
        log,
        known_store_ids,
        reject_duplicates=True,
        check_dates=not_after,
        position=position,
    )
    canonical = pd.DataFrame(covariates)
    valid = canonical[~canonical.index.isin(log.bad_rows())]
    typed = valid.astype({name: _COVARIATE_TYPES[name] for name in _COVARIATE_TYPES})
    return Validated(valid=typed[list(columns.FUTURE_COLUMNS)], issues=log.frame())


def _covariates(
    raw: pd.DataFrame,
    log: _IssueLog,
    known_store_ids: Collection[int],
    *,
    reject_duplicates: bool,
    check_dates: Callable[[pd.Series], None],
    position: Callable[[int], str],
) -> dict[str, pd.Series]:
    """The checks sales records and future covariates share, as parsed columns by name.

    `check_dates` adds the range rule of the caller (sales lie behind, futures ahead).
    """
    store_id = _integers(raw[columns.STORE_ID], log, columns.STORE_ID, minimum=1)
    product_id = _product_ids(raw, log)
    sales_date = _dates(raw[columns.SALES_DATE], log)
    check_dates(sales_date)
    flags = {
        name: _flags(raw[name], log, name)
        for name in (columns.OPEN, columns.PROMO, columns.SCHOOL_HOLIDAY)
    }
    state_holiday = _codes(
        raw[columns.STATE_HOLIDAY], log, columns.STATE_HOLIDAY, columns.STATE_HOLIDAY_CODES
    )

    if columns.DAY_OF_WEEK in raw:
        # Optional per record: a batch may mix records with and without it.
        day_of_week = _integers(
            raw[columns.DAY_OF_WEEK],
            log,
            columns.DAY_OF_WEEK,
            minimum=1,
            maximum=7,
            allow_missing=True,
        )
        iso_weekday = sales_date.dt.dayofweek + 1
        mismatch = day_of_week.notna() & sales_date.notna() & (day_of_week != iso_weekday)
        log.add(
            mismatch.fillna(False).astype(bool),
            columns.DAY_OF_WEEK,
            "does not match the date, which is weekday " + iso_weekday.astype("Int64").astype(str),
        )

    known = pd.Index(pd.unique(np.asarray(list(known_store_ids), dtype=np.int64)))
    unknown = store_id.notna() & ~store_id.isin(known)
    log.add(unknown, columns.STORE_ID, "unknown store (not in the store metadata)")

    if reject_duplicates:
        key = pd.DataFrame(
            {
                columns.STORE_ID: store_id,
                columns.PRODUCT_ID: product_id,
                columns.SALES_DATE: sales_date,
            }
        )
        complete = key.notna().all(axis=1)
        positions = pd.Series(raw.index, index=raw.index)
        first = (
            positions[complete]
            .groupby([key[name][complete] for name in columns.SALES_KEY])
            .transform("first")
        )
        duplicate = pd.Series(False, index=raw.index)
        duplicate[first.index] = first.to_numpy() != first.index.to_numpy()
        # Named only for the duplicates: `position` is a Python call per row.
        firsts = first.reindex(raw.index)[duplicate]
        reasons = pd.Series("", index=raw.index, dtype=object)
        reasons.loc[firsts.index] = pd.Series(
            [
                f"duplicate store, product and date (first seen at {position(int(row))})"
                for row in firsts
            ],
            index=firsts.index,
            dtype=object,
        )
        log.add(duplicate, columns.SALES_DATE, reasons)

    return {
        columns.STORE_ID: store_id,
        columns.PRODUCT_ID: product_id,
        columns.SALES_DATE: sales_date,
        columns.OPEN: flags[columns.OPEN],
        columns.PROMO: flags[columns.PROMO],
        columns.STATE_HOLIDAY: state_holiday,
        columns.SCHOOL_HOLIDAY: flags[columns.SCHOOL_HOLIDAY],
    }


def validate_stores(raw: pd.DataFrame) -> Validated:
    """Check store metadata and convert it to the canonical store frame.

    Args:
        raw: One record per store with domain column names (see `columns.STORE_COLUMNS`);
            only `store_id` is required, missing metadata stays missing.

    Returns:
        The valid stores (columns `columns.STORE_COLUMNS`) and the issues of the others.

    Raises:
        MissingColumnsError: When `store_id` is absent.
    """
    if columns.STORE_ID not in raw.columns:
        raise MissingColumnsError([columns.STORE_ID])
    raw = raw.reset_index(drop=True)
    log = _IssueLog(raw)
    out = pd.DataFrame(index=raw.index)
    out[columns.STORE_ID] = _integers(raw[columns.STORE_ID], log, columns.STORE_ID, minimum=1)
    log.add(
        out[columns.STORE_ID].duplicated(keep="first") & out[columns.STORE_ID].notna(),
        columns.STORE_ID,
        "duplicate store",
    )

    def optional(name: str) -> pd.Series:
        return raw[name] if name in raw else pd.Series(None, index=raw.index, dtype=object)

    for name in (columns.STORE_TYPE, columns.ASSORTMENT, columns.STATE):
        out[name] = _text(optional(name))
    out[columns.COMPETITION_DISTANCE] = _numbers(
        optional(columns.COMPETITION_DISTANCE),
        log,
        columns.COMPETITION_DISTANCE,
        minimum=0.0,
        allow_missing=True,
    )
    bounds = {
        columns.COMPETITION_OPEN_SINCE_MONTH: (1, 12),
        columns.COMPETITION_OPEN_SINCE_YEAR: (1900, 2100),
        columns.PROMO2_SINCE_WEEK: (1, 53),
        columns.PROMO2_SINCE_YEAR: (1900, 2100),
    }
    for name, (low, high) in bounds.items():
        out[name] = _integers(
            optional(name), log, name, minimum=low, maximum=high, allow_missing=True
        )
    # A source without a Promo2 column has no running promotion: 0, not missing.
    out[columns.PROMO2] = (
        _flags(raw[columns.PROMO2], log, columns.PROMO2) if columns.PROMO2 in raw else 0
    )
    out[columns.PROMO_INTERVAL] = _promo_intervals(optional(columns.PROMO_INTERVAL), log)
    valid = out[~out.index.isin(log.bad_rows())]
    return Validated(valid=valid[list(columns.STORE_COLUMNS)], issues=log.frame())


def shortened(text: str, limit: int = 40) -> str:
    """Caller-supplied text as a message echoes it: long texts cut and their length said, so a
    bad request is never sent back whole."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def _shown(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    text = str(value)
    return text if len(text) <= _MAX_SHOWN_VALUE else text[: _MAX_SHOWN_VALUE - 1] + "…"


def _as_text(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Each value as stripped text, and whether it is blank (None, NaN or only spaces).

    Checks parse text so that a value from a CSV file and the same value from JSON pass or
    fail alike; a JSON `true` becomes "True", which is neither a number nor a flag.
    """
    missing = values.isna()
    # Arrow-backed strings strip and compare in native code: a million rows in milliseconds.
    # Text that is already a string column skips the detour through one Python str per value.
    filled = (
        values.fillna("")
        if isinstance(values.dtype, pd.StringDtype)
        else values.where(~missing, "").astype(str)
    )
    text = filled.astype("string[pyarrow]").str.strip()
    blank = (missing | (text == "")).astype(bool)
    return text, blank


def _parse_numbers(text: pd.Series) -> pd.Series:
    """Text to float64, NaN where the text is not a number (pandas' to_numeric is 10x slower)."""
    arrow = pa.array(text.array)
    numeric = pc.match_substring_regex(arrow, _NUMBER_PATTERN)
    numbers = pc.cast(pc.if_else(numeric, arrow, pa.scalar(None, pa.string())), pa.float64())
    values: np.ndarray = numbers.to_numpy(zero_copy_only=False)
    return pd.Series(values, index=text.index, dtype=float)


def _numbers(
    values: pd.Series,
    log: _IssueLog,
    column: str,
    *,
    minimum: float | None = None,
    allow_missing: bool = False,
) -> pd.Series:
    text, blank = _as_text(values)
    parsed = _parse_numbers(text)
    if not allow_missing:
        log.add(blank, column, "missing value")
    log.add(~blank & parsed.isna(), column, "not a number")
    if minimum is not None:
        log.add(parsed < minimum, column, f"must be >= {minimum:g}")
    infinite = np.isinf(parsed)
    log.add(infinite, column, "not a finite number")
    return parsed.where(~infinite)


def _integers(
    values: pd.Series,
    log: _IssueLog,
    column: str,
    *,
    minimum: int | None = None,
    maximum: int = MAX_INTEGER,
    allow_missing: bool = False,
) -> pd.Series:
    parsed = _numbers(values, log, column, allow_missing=allow_missing)
    known = parsed.notna()
    fractional = known & (parsed != np.floor(parsed.fillna(0.0)))
    log.add(fractional, column, "not a whole number")
    if minimum is not None:
        log.add(known & (parsed < minimum), column, f"must be >= {minimum}")
    too_large = known & (parsed > maximum)
    log.add(too_large, column, f"must be <= {maximum}")
    return _nullable_integers(parsed, known & ~fractional & ~too_large, "Int64")


def _flags(values: pd.Series, log: _IssueLog, column: str) -> pd.Series:
    text, blank = _as_text(values)
    parsed = _parse_numbers(text)
    is_flag = (parsed == 0) | (parsed == 1)
    log.add(blank, column, "missing value")
    log.add(~blank & ~is_flag, column, "must be 0 or 1")
    return _nullable_integers(parsed, is_flag, "Int8")


def _nullable_integers(parsed: pd.Series, keep: pd.Series, dtype: str) -> pd.Series:
    """Whole numbers (as floats) in a nullable integer column, missing where not `keep`.

    Built from the values and the mask directly: pandas' astype from float re-checks every
    value in Python-level loops, which made it the slowest step of validating a batch.
    """
    mask = ~keep.to_numpy(dtype=bool)
    values = np.where(mask, 0, parsed.to_numpy()).astype(np.dtype(dtype.lower()))
    return pd.Series(pd.arrays.IntegerArray(values, mask), index=parsed.index)


def _codes(values: pd.Series, log: _IssueLog, column: str, allowed: Iterable[str]) -> pd.Series:
    allowed = tuple(allowed)
    text, blank = _as_text(values)
    log.add(blank, column, "missing value")
    log.add(
        ~blank & ~text.isin(allowed).astype(bool), column, f"must be one of {', '.join(allowed)}"
    )
    return text.astype(object)


def _dates(values: pd.Series, log: _IssueLog) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values.dt.tz_localize(None) if values.dt.tz is not None else values
        log.add(parsed.isna(), columns.SALES_DATE, "missing value")
        normalized: pd.Series = parsed.dt.normalize()
        return normalized
    text, blank = _as_text(values)
    parsed = pd.to_datetime(text.where(~blank), format="%Y-%m-%d", errors="coerce")
    log.add(blank, columns.SALES_DATE, "missing value")
    log.add(~blank & parsed.isna(), columns.SALES_DATE, "not a date in YYYY-MM-DD form")
    return parsed


def _check_date_range(sales_date: pd.Series, log: _IssueLog, limits: SalesLimits) -> None:
    latest = pd.Timestamp(limits.latest_date)
    earliest = pd.Timestamp(limits.earliest_date)
    log.add(
        (sales_date > latest).fillna(False).astype(bool),
        columns.SALES_DATE,
        f"after {limits.latest_date.isoformat()} (today plus the allowed margin): "
        "a date in the future",
    )
    log.add(
        (sales_date < earliest).fillna(False).astype(bool),
        columns.SALES_DATE,
        f"before {limits.earliest_date.isoformat()}",
    )


def _product_ids(raw: pd.DataFrame, log: _IssueLog) -> pd.Series:
    if columns.PRODUCT_ID not in raw:
        return pd.Series(columns.DEFAULT_PRODUCT, index=raw.index, dtype=object)
    text, blank = _as_text(raw[columns.PRODUCT_ID])
    log.add(
        (text.str.len() > MAX_PRODUCT_ID_LENGTH).astype(bool),
        columns.PRODUCT_ID,
        f"longer than {MAX_PRODUCT_ID_LENGTH} characters",
    )
    # An absent product means the store total, as for Rossmann rows.
    return text.astype(object).where(~blank, columns.DEFAULT_PRODUCT)


def _text(values: pd.Series) -> pd.Series:
    text, blank = _as_text(values)
    return text.astype(object).where(~blank, None)


def _promo_intervals(values: pd.Series, log: _IssueLog) -> pd.Series:
    text = _text(values)
    known = set(columns.PROMO_INTERVAL_MONTHS)
    bad = text.map(lambda v: v is not None and not set(v.split(",")) <= known)
    log.add(
        bad,
        columns.PROMO_INTERVAL,
        f"must list months from {','.join(columns.PROMO_INTERVAL_MONTHS)}",
    )
    return text


_COVARIATE_TYPES: dict[str, Any] = {
    columns.STORE_ID: "int64",
    columns.PRODUCT_ID: object,
    columns.OPEN: "int8",
    columns.PROMO: "int8",
    columns.STATE_HOLIDAY: object,
    columns.SCHOOL_HOLIDAY: "int8",
}


def _typed_sales(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({**_COVARIATE_TYPES, columns.SALES: "float64", columns.CUSTOMERS: "Int64"})[
        list(columns.SALES_COLUMNS)
    ]
