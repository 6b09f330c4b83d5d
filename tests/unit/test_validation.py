"""Validation rules on tiny frames."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from sfmlops.core import columns as c
from sfmlops.core.validation import (
    MissingColumnsError,
    SalesLimits,
    validate_future,
    validate_sales,
    validate_stores,
)

KNOWN_STORES = {1, 2, 3}


def record(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        c.STORE_ID: "1",
        c.DAY_OF_WEEK: "6",
        c.SALES_DATE: "2015-06-13",
        c.SALES: "4256",
        c.CUSTOMERS: "502",
        c.OPEN: "1",
        c.PROMO: "0",
        c.STATE_HOLIDAY: "0",
        c.SCHOOL_HOLIDAY: "0",
    }
    return base | overrides


def test_valid_records_become_the_typed_canonical_frame() -> None:
    result = validate_sales(
        pd.DataFrame([record(), record(**{c.STORE_ID: "2", c.STATE_HOLIDAY: "a"})]), KNOWN_STORES
    )

    assert result.ok
    assert list(result.valid.columns) == list(c.SALES_COLUMNS)
    assert result.valid[c.STORE_ID].tolist() == [1, 2]
    assert result.valid[c.PRODUCT_ID].tolist() == [c.DEFAULT_PRODUCT, c.DEFAULT_PRODUCT]
    assert result.valid[c.SALES_DATE].tolist() == [pd.Timestamp("2015-06-13")] * 2
    assert result.valid[c.SALES].tolist() == [4256.0, 4256.0]
    assert result.valid[c.STATE_HOLIDAY].tolist() == ["0", "a"]


@pytest.mark.parametrize(
    ("override", "column", "reason"),
    [
        ({c.SALES: "-1"}, c.SALES, "must be >= 0"),
        ({c.SALES: "lots"}, c.SALES, "not a number"),
        ({c.SALES: ""}, c.SALES, "missing value"),
        ({c.CUSTOMERS: "-3"}, c.CUSTOMERS, "must be >= 0"),
        ({c.CUSTOMERS: "2.5"}, c.CUSTOMERS, "not a whole number"),
        ({c.SALES_DATE: "2015-02-30"}, c.SALES_DATE, "not a date in YYYY-MM-DD form"),
        ({c.SALES_DATE: "13/06/2015"}, c.SALES_DATE, "not a date in YYYY-MM-DD form"),
        ({c.DAY_OF_WEEK: "2"}, c.DAY_OF_WEEK, "does not match the date, which is weekday 6"),
        ({c.DAY_OF_WEEK: "8"}, c.DAY_OF_WEEK, "must be <= 7"),
        ({c.OPEN: "2"}, c.OPEN, "must be 0 or 1"),
        ({c.PROMO: "yes"}, c.PROMO, "must be 0 or 1"),
        ({c.SCHOOL_HOLIDAY: ""}, c.SCHOOL_HOLIDAY, "missing value"),
        ({c.STATE_HOLIDAY: "d"}, c.STATE_HOLIDAY, "must be one of 0, a, b, c"),
        ({c.STORE_ID: "99"}, c.STORE_ID, "unknown store (not in the store metadata)"),
        ({c.STORE_ID: "0"}, c.STORE_ID, "must be >= 1"),
        ({c.SALES: "inf"}, c.SALES, "not a number"),
        ({c.CUSTOMERS: "1e12"}, c.CUSTOMERS, "must be <= 2147483647"),
        ({c.STORE_ID: "3000000000"}, c.STORE_ID, "must be <= 2147483647"),
    ],
)
def test_each_rule_names_the_row_and_column(
    override: dict[str, str], column: str, reason: str
) -> None:
    frame = pd.DataFrame([record(**{c.STORE_ID: "2"}), record(**override)])

    result = validate_sales(frame, KNOWN_STORES)

    assert not result.ok
    assert result.rejected_rows == [1]
    first = result.issues.iloc[0]
    assert (first["row"], first["column"], first["reason"]) == (1, column, reason)
    assert result.valid.index.tolist() == [0]


def test_duplicates_are_rejected_with_the_row_they_repeat() -> None:
    frame = pd.DataFrame([record(), record(**{c.STORE_ID: "2"}), record(**{c.SALES: "1"})])

    result = validate_sales(frame, KNOWN_STORES)

    assert result.rejected_rows == [2]
    assert "first seen in row 0" in result.issues.iloc[0]["reason"]
    assert result.valid[c.SALES].tolist() == [4256.0, 4256.0]


def test_streams_may_keep_duplicates_for_later_resolution() -> None:
    frame = pd.DataFrame([record(), record(**{c.SALES: "1"})])

    assert validate_sales(frame, KNOWN_STORES, reject_duplicates=False).ok


def test_the_same_store_and_date_for_another_product_is_no_duplicate() -> None:
    frame = pd.DataFrame([record(**{c.PRODUCT_ID: "shampoo"}), record(**{c.PRODUCT_ID: "soap"})])

    result = validate_sales(frame, KNOWN_STORES)

    assert result.ok
    assert result.valid[c.PRODUCT_ID].tolist() == ["shampoo", "soap"]


def test_json_values_follow_the_same_rules_as_text() -> None:
    frame = pd.DataFrame(
        [
            {c.STORE_ID: 3, c.SALES_DATE: "2015-06-13", c.SALES: 10.5, c.OPEN: 1, c.PROMO: 0,
             c.STATE_HOLIDAY: 0, c.SCHOOL_HOLIDAY: 1},
            {c.STORE_ID: 3, c.SALES_DATE: "2015-06-12", c.SALES: True, c.OPEN: 1, c.PROMO: 0,
             c.STATE_HOLIDAY: "0", c.SCHOOL_HOLIDAY: None},
        ]
    )  # fmt: skip

    result = validate_sales(frame, KNOWN_STORES)

    assert result.rejected_rows == [1]
    assert set(result.issues["column"]) == {c.SALES, c.SCHOOL_HOLIDAY}
    assert result.valid[c.CUSTOMERS].isna().all()
    assert result.reasons_by_row() == {1: "sales: not a number; school_holiday: missing value"}


def test_missing_required_columns_are_named() -> None:
    frame = pd.DataFrame([record()]).drop(columns=[c.SALES, c.OPEN])

    with pytest.raises(MissingColumnsError) as error:
        validate_sales(frame, KNOWN_STORES)

    assert error.value.missing == [c.SALES, c.OPEN]


def test_store_metadata_keeps_blanks_as_missing_and_rejects_bad_months() -> None:
    frame = pd.DataFrame(
        [
            {c.STORE_ID: "1", c.STORE_TYPE: "c", c.ASSORTMENT: "a", c.COMPETITION_DISTANCE: "1270",
             c.COMPETITION_OPEN_SINCE_MONTH: "9", c.PROMO2: "0", c.PROMO_INTERVAL: ""},
            {c.STORE_ID: "2", c.STORE_TYPE: "a", c.ASSORTMENT: "a", c.COMPETITION_DISTANCE: "",
             c.COMPETITION_OPEN_SINCE_MONTH: "13", c.PROMO2: "1", c.PROMO_INTERVAL: "Jan,Apr,Jul,Oct"},
            {c.STORE_ID: "3", c.PROMO2: "1", c.PROMO_INTERVAL: "Jan,Foo"},
        ]
    )  # fmt: skip

    result = validate_stores(frame)

    assert result.rejected_rows == [1, 2]
    assert set(result.issues["column"]) == {c.COMPETITION_OPEN_SINCE_MONTH, c.PROMO_INTERVAL}
    first = result.valid.iloc[0]
    assert first[c.STORE_TYPE] == "c"
    assert first[c.PROMO_INTERVAL] is None
    assert list(result.valid.columns) == list(c.STORE_COLUMNS)


def test_duplicate_stores_are_rejected() -> None:
    result = validate_stores(pd.DataFrame({c.STORE_ID: ["1", "1"], c.PROMO2: ["0", "0"]}))

    assert result.rejected_rows == [1]


LIMITS = SalesLimits(latest_date=dt.date(2015, 6, 14), max_sales=50_000, max_customers=9_000)


@pytest.mark.parametrize(
    ("override", "column", "reason"),
    [
        ({c.SALES_DATE: "2015-06-15", c.DAY_OF_WEEK: ""}, c.SALES_DATE,
         "after 2015-06-14 (today plus the allowed margin): a date in the future"),
        ({c.SALES_DATE: "2099-06-13", c.DAY_OF_WEEK: ""}, c.SALES_DATE,
         "after 2015-06-14 (today plus the allowed margin): a date in the future"),
        ({c.SALES_DATE: "1989-12-31", c.DAY_OF_WEEK: ""}, c.SALES_DATE, "before 1990-01-01"),
        ({c.OPEN: "0"}, c.SALES,
         "sales on a closed day (open is 0): either the store was open or the sales are 0"),
        ({c.SALES: "50000.5"}, c.SALES, "more than 50,000 in a day (the configured bound)"),
        ({c.SALES: "1e12"}, c.SALES, "more than 50,000 in a day (the configured bound)"),
        ({c.CUSTOMERS: "9001"}, c.CUSTOMERS, "more than 9,000 in a day (the configured bound)"),
    ],
)  # fmt: skip
def test_implausible_records_are_rejected_with_a_reason(
    override: dict[str, str], column: str, reason: str
) -> None:
    other_store = {c.STORE_ID: "2"} | override
    result = validate_sales(
        pd.DataFrame([record(), record(**other_store)]), KNOWN_STORES, limits=LIMITS
    )

    assert result.rejected_rows == [1]
    assert result.reasons_by_row() == {1: f"{column}: {reason}"}
    assert len(result.valid) == 1


def test_bounds_are_inclusive_and_a_closed_day_without_sales_passes() -> None:
    frame = pd.DataFrame(
        [
            record(**{c.SALES_DATE: "2015-06-14", c.DAY_OF_WEEK: "7", c.SALES: "50000"}),
            record(**{c.STORE_ID: "2", c.OPEN: "0", c.SALES: "0", c.CUSTOMERS: "9000"}),
            record(**{c.SALES_DATE: "1990-01-01", c.DAY_OF_WEEK: "1"}),
        ]
    )

    assert validate_sales(frame, KNOWN_STORES, limits=LIMITS).ok


def test_the_default_limits_follow_the_wall_clock() -> None:
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    in_two_days = tomorrow + dt.timedelta(days=1)
    frame = pd.DataFrame(
        [
            record(**{c.SALES_DATE: tomorrow.isoformat(), c.DAY_OF_WEEK: ""}),
            record(**{c.SALES_DATE: in_two_days.isoformat(), c.DAY_OF_WEEK: ""}),
        ]
    )

    assert validate_sales(frame, KNOWN_STORES).rejected_rows == [1]
    assert SalesLimits.for_today(margin_days=2).latest_date == in_two_days


def test_optional_fields_are_optional_per_record() -> None:
    # One record sends day_of_week, the next omits it (JSON null or no key at all).
    frame = pd.DataFrame.from_records(
        [record(), {k: v for k, v in record(**{c.STORE_ID: "2"}).items() if k != c.DAY_OF_WEEK},
         record(**{c.STORE_ID: "3", c.DAY_OF_WEEK: None, c.CUSTOMERS: None})]
    )  # fmt: skip

    result = validate_sales(frame, KNOWN_STORES)

    assert result.ok, result.reasons_by_row()
    assert len(result.valid) == 3


def future(**overrides: object) -> dict[str, object]:
    base = {key: value for key, value in record().items() if key not in (c.SALES, c.CUSTOMERS)}
    return base | overrides


def test_future_covariates_need_no_amounts_and_may_lie_beyond_today() -> None:
    next_year = dt.date.today() + dt.timedelta(days=365)
    rows = pd.DataFrame(
        [future(), future(**{c.SALES_DATE: next_year.isoformat(), c.DAY_OF_WEEK: ""})]
    )

    result = validate_future(rows, KNOWN_STORES, after=dt.date(2015, 6, 12))

    assert result.ok
    assert list(result.valid.columns) == list(c.FUTURE_COLUMNS)
    assert result.valid[c.SALES_DATE].tolist() == [
        pd.Timestamp("2015-06-13"),
        pd.Timestamp(next_year),
    ]
    assert result.valid[c.PRODUCT_ID].tolist() == [c.DEFAULT_PRODUCT] * 2


def test_future_covariates_follow_the_sales_rules_and_start_after_the_history() -> None:
    rows = pd.DataFrame(
        [
            future(**{c.SALES_DATE: "2015-06-12", c.DAY_OF_WEEK: "5"}),
            future(**{c.PROMO: "2"}),
            future(**{c.STORE_ID: "9"}),
            future(),
        ]
    )

    result = validate_future(rows, KNOWN_STORES, after=dt.date(2015, 6, 12))

    assert result.reasons_by_row() == {
        0: "sales_date: not after the data's end (2015-06-12): forecasts start the day after",
        1: "promo: must be 0 or 1",
        2: "store_id: unknown store (not in the store metadata)",
        3: "sales_date: duplicate store, product and date (first seen in row 1)",
    }
    assert result.valid.empty


def test_future_covariates_name_missing_columns() -> None:
    with pytest.raises(MissingColumnsError, match="promo"):
        validate_future(pd.DataFrame([future()]).drop(columns=[c.PROMO]), KNOWN_STORES)
