"""The one place that knows column names.

Every frame that crosses a module boundary is long-format with these domain names;
source files with other headers are renamed at the edge (see `ROSSMANN_SALES_COLUMNS`).
"""

from __future__ import annotations

from typing import Final

# A forecast series is (store, product). Rossmann has one product per store.
DEFAULT_PRODUCT: Final = "total"

# Sales history: one row per (store, product, day).
STORE_ID: Final = "store_id"
PRODUCT_ID: Final = "product_id"
SALES_DATE: Final = "sales_date"
DAY_OF_WEEK: Final = "day_of_week"  # ISO: Monday = 1 .. Sunday = 7, as in the Rossmann files
SALES: Final = "sales"
CUSTOMERS: Final = "customers"
OPEN: Final = "open"
PROMO: Final = "promo"
STATE_HOLIDAY: Final = "state_holiday"
SCHOOL_HOLIDAY: Final = "school_holiday"

SERIES_KEY: Final = (STORE_ID, PRODUCT_ID)
SALES_KEY: Final = (STORE_ID, PRODUCT_ID, SALES_DATE)
SALES_COLUMNS: Final = (
    STORE_ID,
    PRODUCT_ID,
    SALES_DATE,
    SALES,
    CUSTOMERS,
    OPEN,
    PROMO,
    STATE_HOLIDAY,
    SCHOOL_HOLIDAY,
)
# What a sales record must carry; product defaults to DEFAULT_PRODUCT, customers may be unknown,
# and day_of_week is only checked when given.
REQUIRED_SALES_COLUMNS: Final = (
    STORE_ID,
    SALES_DATE,
    SALES,
    OPEN,
    PROMO,
    STATE_HOLIDAY,
    SCHOOL_HOLIDAY,
)
STATE_HOLIDAY_CODES: Final = ("0", "a", "b", "c")  # none, public, Easter, Christmas

# Store metadata: one row per store.
STORE_TYPE: Final = "store_type"
ASSORTMENT: Final = "assortment"
COMPETITION_DISTANCE: Final = "competition_distance"  # metres
COMPETITION_OPEN_SINCE_MONTH: Final = "competition_open_since_month"
COMPETITION_OPEN_SINCE_YEAR: Final = "competition_open_since_year"
PROMO2: Final = "promo2"
PROMO2_SINCE_WEEK: Final = "promo2_since_week"
PROMO2_SINCE_YEAR: Final = "promo2_since_year"
PROMO_INTERVAL: Final = "promo_interval"  # months Promo2 restarts in, e.g. "Jan,Apr,Jul,Oct"
STATE: Final = "state"  # German state code, e.g. "HE"

STORE_COLUMNS: Final = (
    STORE_ID,
    STORE_TYPE,
    ASSORTMENT,
    COMPETITION_DISTANCE,
    COMPETITION_OPEN_SINCE_MONTH,
    COMPETITION_OPEN_SINCE_YEAR,
    PROMO2,
    PROMO2_SINCE_WEEK,
    PROMO2_SINCE_YEAR,
    PROMO_INTERVAL,
    STATE,
)
PROMO_INTERVAL_MONTHS: Final = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sept", "Oct", "Nov", "Dec",
)  # fmt: skip

# Source headers of the Rossmann files, mapped to domain names.
ROSSMANN_SALES_COLUMNS: Final = {
    "Store": STORE_ID,
    "Product": PRODUCT_ID,  # not in the Rossmann files (one product per store); synthetic data has it
    "DayOfWeek": DAY_OF_WEEK,
    "Date": SALES_DATE,
    "Sales": SALES,
    "Customers": CUSTOMERS,
    "Open": OPEN,
    "Promo": PROMO,
    "StateHoliday": STATE_HOLIDAY,
    "SchoolHoliday": SCHOOL_HOLIDAY,
}
ROSSMANN_STORE_COLUMNS: Final = {
    "Store": STORE_ID,
    "StoreType": STORE_TYPE,
    "Assortment": ASSORTMENT,
    "CompetitionDistance": COMPETITION_DISTANCE,
    "CompetitionOpenSinceMonth": COMPETITION_OPEN_SINCE_MONTH,
    "CompetitionOpenSinceYear": COMPETITION_OPEN_SINCE_YEAR,
    "Promo2": PROMO2,
    "Promo2SinceWeek": PROMO2_SINCE_WEEK,
    "Promo2SinceYear": PROMO2_SINCE_YEAR,
    "PromoInterval": PROMO_INTERVAL,
}
ROSSMANN_STATE_COLUMNS: Final = {"Store": STORE_ID, "State": STATE}

# Future covariates: what a caller knows about the days to forecast, one row per (series, day).
# A day is `SALES_DATE` in every frame, history or future: the day the sales are (or will be).
FUTURE_COLUMNS: Final = (
    STORE_ID,
    PRODUCT_ID,
    SALES_DATE,
    OPEN,
    PROMO,
    STATE_HOLIDAY,
    SCHOOL_HOLIDAY,
)
FUTURE_KEY: Final = SALES_KEY

# Forecasts: a point forecast with 80 % and 95 % prediction intervals, in sales units.
YHAT: Final = "yhat"
YHAT_LOWER: Final = "yhat_lower"  # 10 % quantile
YHAT_UPPER: Final = "yhat_upper"  # 90 % quantile
YHAT_LOWER_95: Final = "yhat_lower_95"  # 2.5 % quantile
YHAT_UPPER_95: Final = "yhat_upper_95"  # 97.5 % quantile
FORECAST_VALUES: Final = (YHAT, YHAT_LOWER, YHAT_UPPER, YHAT_LOWER_95, YHAT_UPPER_95)
FORECAST_COLUMNS: Final = (STORE_ID, PRODUCT_ID, SALES_DATE, *FORECAST_VALUES)

# Backtests: which model and window a forecast or metric belongs to.
MODEL: Final = "model"
BACKTEST_WINDOW: Final = "backtest_window"  # 1 = oldest window
HORIZON_DAYS: Final = "horizon_days"  # 1 = the first day after the cutoff
CUTOFF: Final = "cutoff"  # the last day of history a forecast was allowed to see

# The competition's test file (future covariates with a row id) and submission file.
ROSSMANN_ROW_ID: Final = "Id"
ROSSMANN_FUTURE_COLUMNS: Final = {
    "Id": ROSSMANN_ROW_ID,
    "Store": STORE_ID,
    "DayOfWeek": DAY_OF_WEEK,
    "Date": SALES_DATE,
    "Open": OPEN,
    "Promo": PROMO,
    "StateHoliday": STATE_HOLIDAY,
    "SchoolHoliday": SCHOOL_HOLIDAY,
}
ROSSMANN_SUBMISSION_COLUMNS: Final = {
    ROSSMANN_ROW_ID: "Id",
    YHAT: "Sales",
    YHAT_LOWER: "Sales_lower",
    YHAT_UPPER: "Sales_upper",
    YHAT_LOWER_95: "Sales_lower_95",
    YHAT_UPPER_95: "Sales_upper_95",
}
