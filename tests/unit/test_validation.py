"""Validation rules on tiny frames."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from sfmlops.core import columns
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
        columns.STORE_ID: "1",
        columns.DAY_OF_WEEK: "6",
        columns.SALES_DATE: "2015-06-13",
        columns.SALES: "4256",
        columns.CUSTOMERS: "502",
        columns.OPEN: "1",
        columns.PROMO: "0",
        columns.STATE_HOLIDAY: "0",
        columns.SCHOOL_HOLIDAY: "0",
    }
    return base | overrides


def test_valid_records_become_the_typed_canonical_frame() -> None:
    result = validate_sales(
        pd.DataFrame([record(), record(**{columns.STORE_ID: "2", columns.STATE_HOLIDAY: "a"})]),
        KNOWN_STORES,
    )

    assert result.ok
    assert list(result.valid.columns) == list(columns.SALES_COLUMNS)
    assert result.valid[columns.STORE_ID].tolist() == [1, 2]
    assert result.valid[columns.PRODUCT_ID].tolist() == [
        columns.DEFAULT_PRODUCT,
        columns.DEFAULT_PRODUCT,
    ]
    assert result.valid[columns.SALES_DATE].tolist() == [pd.Timestamp("2015-06-13")] * 2
    assert result.valid[columns.SALES].tolist() == [4256.0, 4256.0]
    assert result.valid[columns.STATE_HOLIDAY].tolist() == ["0", "a"]


@pytest.mark.parametrize(
    ("override", "column", "reason"),
    [
        ({columns.SALES: "-1"}, columns.SALES, "must be >= 0"),
        ({columns.SALES: "lots"}, columns.SALES, "not a number"),
        ({columns.SALES: ""}, columns.SALES, "missing value"),
        ({columns.CUSTOMERS: "-3"}, columns.CUSTOMERS, "must be >= 0"),
        ({columns.CUSTOMERS: "2.5"}, columns.CUSTOMERS, "not a whole number"),
        ({columns.SALES_DATE: "2015-02-30"}, columns.SALES_DATE, "not a date in YYYY-MM-DD form"),
        ({columns.SALES_DATE: "13/06/2015"}, columns.SALES_DATE, "not a date in YYYY-MM-DD form"),
        (
            {columns.DAY_OF_WEEK: "2"},
            columns.DAY_OF_WEEK,
            "does not match the date, which is weekday 6",
        ),
        ({columns.DAY_OF_WEEK: "8"}, columns.DAY_OF_WEEK, "must be <= 7"),
        ({columns.OPEN: "2"}, columns.OPEN, "must be 0 or 1"),
        ({columns.PROMO: "yes"}, columns.PROMO, "must be 0 or 1"),
        ({columns.SCHOOL_HOLIDAY: ""}, columns.SCHOOL_HOLIDAY, "missing value"),
        ({columns.STATE_HOLIDAY: "d"}, columns.STATE_HOLIDAY, "must be one of 0, a, b, c"),
        ({columns.STORE_ID: "99"}, columns.STORE_ID, "unknown store (not in the store metadata)"),
        ({columns.STORE_ID: "0"}, columns.STORE_ID, "must be >= 1"),
        ({columns.SALES: "inf"}, columns.SALES, "not a number"),
        ({columns.CUSTOMERS: "1e12"}, columns.CUSTOMERS, "must be <= 2147483647"),
        ({columns.STORE_ID: "3000000000"}, columns.STORE_ID, "must be <= 2147483647"),
    ],
)
def test_each_rule_names_the_row_and_column(
    override: dict[str, str], column: str, reason: str
) -> None:
    frame = pd.DataFrame([record(**{columns.STORE_ID: "2"}), record(**override)])

    result = validate_sales(frame, KNOWN_STORES)

    assert not result.ok
    assert result.rejected_rows == [1]
    first = result.issues.iloc[0]
    assert (first["row"], first["column"], first["reason"]) == (1, column, reason)
    assert result.valid.index.tolist() == [0]


def test_duplicates_are_rejected_with_the_row_they_repeat() -> None:
    frame = pd.DataFrame(
        [record(), record(**{columns.STORE_ID: "2"}), record(**{columns.SALES: "1"})]
    )

    result = validate_sales(frame, KNOWN_STORES)

    assert result.rejected_rows == [2]
    assert "first seen at record 0" in result.issues.iloc[0]["reason"]
    assert result.valid[columns.SALES].tolist() == [4256.0, 4256.0]


def test_streams_may_keep_duplicates_for_later_resolution() -> None:
    frame = pd.DataFrame([record(), record(**{columns.SALES: "1"})])

    assert validate_sales(frame, KNOWN_STORES, reject_duplicates=False).ok


def test_the_same_store_and_date_for_another_product_is_no_duplicate() -> None:
    frame = pd.DataFrame(
        [record(**{columns.PRODUCT_ID: "shampoo"}), record(**{columns.PRODUCT_ID: "soap"})]
    )

    result = validate_sales(frame, KNOWN_STORES)

    assert result.ok
    assert result.valid[columns.PRODUCT_ID].tolist() == ["shampoo", "soap"]


def test_json_values_follow_the_same_rules_as_text() -> None:
    frame = pd.DataFrame(
        [
            {columns.STORE_ID: 3, columns.SALES_DATE: "2015-06-13", columns.SALES: 10.5, columns.OPEN: 1, columns.PROMO: 0,
             columns.STATE_HOLIDAY: 0, columns.SCHOOL_HOLIDAY: 1},
            {columns.STORE_ID: 3, columns.SALES_DATE: "2015-06-12", columns.SALES: True, columns.OPEN: 1, columns.PROMO: 0,
             columns.STATE_HOLIDAY: "0", columns.SCHOOL_HOLIDAY: None},
        ]
    )  # fmt: skip

    result = validate_sales(frame, KNOWN_STORES)

    assert result.rejected_rows == [1]
    assert set(result.issues["column"]) == {columns.SALES, columns.SCHOOL_HOLIDAY}
    assert result.valid[columns.CUSTOMERS].isna().all()
    assert result.reasons_by_row() == {1: "sales: not a number; school_holiday: missing value"}


def test_missing_required_columns_are_named() -> None:
    frame = pd.DataFrame([record()]).drop(columns=[columns.SALES, columns.OPEN])

    with pytest.raises(MissingColumnsError) as error:
        validate_sales(frame, KNOWN_STORES)

    assert error.value.missing == [columns.SALES, columns.OPEN]


def test_store_metadata_keeps_blanks_as_missing_and_rejects_bad_months() -> None:
    frame = pd.DataFrame(
        [
            {columns.STORE_ID: "1", columns.STORE_TYPE: "c", columns.ASSORTMENT: "a", columns.COMPETITION_DISTANCE: "1270",
             columns.COMPETITION_OPEN_SINCE_MONTH: "9", columns.PROMO2: "0", columns.PROMO_INTERVAL: ""},
            {columns.STORE_ID: "2", columns.STORE_TYPE: "a", columns.ASSORTMENT: "a", columns.COMPETITION_DISTANCE: "",
             columns.COMPETITION_OPEN_SINCE_MONTH: "13", columns.PROMO2: "1", columns.PROMO_INTERVAL: "Jan,Apr,Jul,Oct"},
            {columns.STORE_ID: "3", columns.PROMO2: "1", columns.PROMO_INTERVAL: "Jan,Foo"},
        ]
    )  # fmt: skip

    result = validate_stores(frame)

    assert result.rejected_rows == [1, 2]
    assert set(result.issues["column"]) == {
        columns.COMPETITION_OPEN_SINCE_MONTH,
        columns.PROMO_INTERVAL,
    }
    first = result.valid.iloc[0]
    assert first[columns.STORE_TYPE] == "c"
    assert first[columns.PROMO_INTERVAL] is None
    assert list(result.valid.columns) == list(columns.STORE_COLUMNS)


def test_duplicate_stores_are_rejected() -> None:
    result = validate_stores(
        pd.DataFrame({columns.STORE_ID: ["1", "1"], columns.PROMO2: ["0", "0"]})
    )

    assert result.rejected_rows == [1]


LIMITS = SalesLimits(latest_date=dt.date(2015, 6, 14), max_sales=50_000, max_customers=9_000)


@pytest.mark.parametrize(
    ("override", "column", "reason"),
    [
        ({columns.SALES_DATE: "2015-06-15", columns.DAY_OF_WEEK: ""}, columns.SALES_DATE,
         "after 2015-06-14 (today plus the allowed margin): a date in the future"),
        ({columns.SALES_DATE: "2099-06-13", columns.DAY_OF_WEEK: ""}, columns.SALES_DATE,
         "after 2015-06-14 (today plus the allowed margin): a date in the future"),
        ({columns.SALES_DATE: "1989-12-31", columns.DAY_OF_WEEK: ""}, columns.SALES_DATE, "before 1990-01-01"),
        ({columns.OPEN: "0"}, columns.SALES,
         "sales on a closed day (open is 0): either the store was open or the sales are 0"),
        ({columns.SALES: "50000.5"}, columns.SALES, "more than 50,000 in a day (the configured bound)"),
        ({columns.SALES: "1e12"}, columns.SALES, "more than 50,000 in a day (the configured bound)"),
        ({columns.CUSTOMERS: "9001"}, columns.CUSTOMERS, "more than 9,000 in a day (the configured bound)"),
    ],
)  # fmt: skip
def test_implausible_records_are_rejected_with_a_reason(
    override: dict[str, str], column: str, reason: str
) -> None:
    other_store = {columns.STORE_ID: "2"} | override
    result = validate_sales(
        pd.DataFrame([record(), record(**other_store)]), KNOWN_STORES, limits=LIMITS
    )

    assert result.rejected_rows == [1]
    assert result.reasons_by_row() == {1: f"{column}: {reason}"}
    assert len(result.valid) == 1


def test_bounds_are_inclusive_and_a_closed_day_without_sales_passes() -> None:
    frame = pd.DataFrame(
        [
            record(
                **{
                    columns.SALES_DATE: "2015-06-14",
                    columns.DAY_OF_WEEK: "7",
                    columns.SALES: "50000",
                }
            ),
            record(
                **{
                    columns.STORE_ID: "2",
                    columns.OPEN: "0",
                    columns.SALES: "0",
                    columns.CUSTOMERS: "9000",
                }
            ),
            record(**{columns.SALES_DATE: "1990-01-01", columns.DAY_OF_WEEK: "1"}),
        ]
    )

    assert validate_sales(frame, KNOWN_STORES, limits=LIMITS).ok


def test_the_default_limits_follow_the_wall_clock() -> None:
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    in_two_days = tomorrow + dt.timedelta(days=1)
    frame = pd.DataFrame(
        [
            record(**{columns.SALES_DATE: tomorrow.isoformat(), columns.DAY_OF_WEEK: ""}),
            record(**{columns.SALES_DATE: in_two_days.isoformat(), columns.DAY_OF_WEEK: ""}),
        ]
    )

    assert validate_sales(frame, KNOWN_STORES).rejected_rows == [1]
    assert SalesLimits.for_today(margin_days=2).latest_date == in_two_days


def test_optional_fields_are_optional_per_record() -> None:
    # One record sends day_of_week, the next omits it (JSON null or no key at all).
    frame = pd.DataFrame.from_records(
        [record(), {k: v for k, v in record(**{columns.STORE_ID: "2"}).items() if k != columns.DAY_OF_WEEK},
         record(**{columns.STORE_ID: "3", columns.DAY_OF_WEEK: None, columns.CUSTOMERS: None})]
    )  # fmt: skip

    result = validate_sales(frame, KNOWN_STORES)

    assert result.ok, result.reasons_by_row()
    assert len(result.valid) == 3


def future(**overrides: object) -> dict[str, object]:
    base = {
        key: value
        for key, value in record().items()
        if key not in (columns.SALES, columns.CUSTOMERS)
    }
    return base | overrides


def test_future_covariates_need_no_amounts_and_may_lie_beyond_today() -> None:
    next_year = dt.date.today() + dt.timedelta(days=365)
    rows = pd.DataFrame(
        [future(), future(**{columns.SALES_DATE: next_year.isoformat(), columns.DAY_OF_WEEK: ""})]
    )

    result = validate_future(rows, KNOWN_STORES, after=dt.date(2015, 6, 12))

    assert result.ok
    assert list(result.valid.columns) == list(columns.FUTURE_COLUMNS)
    assert result.valid[columns.SALES_DATE].tolist() == [
        pd.Timestamp("2015-06-13"),
        pd.Timestamp(next_year),
    ]
    assert result.valid[columns.PRODUCT_ID].tolist() == [columns.DEFAULT_PRODUCT] * 2


def test_future_covariates_follow_the_sales_rules_and_start_after_the_history() -> None:
    rows = pd.DataFrame(
        [
            future(**{columns.SALES_DATE: "2015-06-12", columns.DAY_OF_WEEK: "5"}),
            future(**{columns.PROMO: "2"}),
            future(**{columns.STORE_ID: "9"}),
            future(),
        ]
    )

    result = validate_future(rows, KNOWN_STORES, after=dt.date(2015, 6, 12))

    assert result.reasons_by_row() == {
        0: "sales_date: not after the data's end (2015-06-12): forecasts start the day after",
        1: "promo: must be 0 or 1",
        2: "store_id: unknown store (not in the store metadata)",
        3: "sales_date: duplicate store, product and date (first seen at record 1)",
    }
    assert result.valid.empty


def test_future_covariates_name_missing_columns() -> None:
    with pytest.raises(MissingColumnsError, match="promo"):
        validate_future(pd.DataFrame([future()]).drop(columns=[columns.PROMO]), KNOWN_STORES)
