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
