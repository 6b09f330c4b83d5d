"""Writing a synthetic multi-product dataset in the file format `load-data` reads.

The stores, their days open, promotions and holidays come from a real dataset (the bundled
Rossmann data by default); `core.synthetic_sales` splits each store's sales over products.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sfmlops.adapters import files
from sfmlops.core import columns
from sfmlops.core.synthetic_sales import synthesize_sales
from sfmlops.services import loading

SALES_FILE_NAME = "train.csv.gz"
# The Rossmann layout with a product column, as `load-data` reads it.
SALES_HEADER = (
    "Store", "Product", "DayOfWeek", "Date", "Sales", "Customers", "Open", "Promo",
    "StateHoliday", "SchoolHoliday",
)  # fmt: skip


@dataclass(frozen=True)
class SyntheticDataset:
    """What `write_synthetic_dataset` wrote."""

    folder: Path
    stores: int
    products: int
    series: int
    rows: int
    first_day: dt.date
    last_day: dt.date


def write_synthetic_dataset(
    source: Path,
    out: Path,
    *,
    stores: int,
    products: int,
    days: int,
    seed: int,
    on_store: Callable[[int], None] | None = None,
) -> SyntheticDataset:
    """Write `stores` x `products` series of the last `days` days of `source` into `out`.

    Args:
        source: A folder `load-data` reads (store.csv, store_states.csv, train.csv[.gz]).
        out: The folder to write `train.csv.gz`, `store.csv` and `store_states.csv` into
            (created; files of those names are replaced).
        stores: The first `stores` stores of `source` by id.
        products: Products per store.
        days: Days of history up to the source's last day.
        seed: The same arguments and seed write the same rows.
        on_store: Called with the number of stores written so far.

    Raises:
        ValueError: When a count is out of range (nothing is written).
        loading.DataFileError: When `source` fails validation (nothing is written).
    """
    for name, value in (("stores", stores), ("products", products), ("days", days)):
        if value < 1:
            raise ValueError(f"--{name} must be at least 1, got {value}")
    dataset = loading.read_dataset(source)
    available = sorted(dataset.stores[columns.STORE_ID].astype(int))
    if stores > len(available):
        raise ValueError(f"--stores {stores}: {source} has only {len(available)} stores")
    if dataset.sales[columns.PRODUCT_ID].nunique() > 1:
        raise ValueError(f"{source}: synthetic products are split from one product per store")
    chosen = set(available[:stores])
    sales = dataset.sales[dataset.sales[columns.STORE_ID].isin(chosen)]
    last_day = pd.Timestamp(sales[columns.SALES_DATE].max())
    first_day = last_day - pd.Timedelta(days=days - 1)
    sales = sales[pd.to_datetime(sales[columns.SALES_DATE]) >= first_day]

    out.mkdir(parents=True, exist_ok=True)
    _copy_store_files(source, out, chosen)
    rows = 0
    series = 0
    partial = out / f".{SALES_FILE_NAME}.partial"
    # gzip level 1: a 100k-series file is ~36 M rows, where level 9 costs minutes for little.
    # mtime 0: the same arguments write the same bytes, not only the same rows.
    with (
        gzip.GzipFile(partial, "wb", compresslevel=1, mtime=0) as compressed,
        io.TextIOWrapper(compressed, encoding="utf-8", newline="") as handle,
    ):
        csv.writer(handle).writerow(SALES_HEADER)
        for written, frame in enumerate(synthesize_sales(sales, products, seed), start=1):
            _rossmann_layout(frame).to_csv(handle, header=False, index=False)
            rows += len(frame)
            series += frame[columns.PRODUCT_ID].nunique()
            if on_store is not None:
                on_store(written)
    partial.replace(out / SALES_FILE_NAME)
    return SyntheticDataset(
        folder=out,
        stores=stores,
        products=products,
        series=series,
        rows=rows,
        first_day=first_day.date(),
        last_day=last_day.date(),
    )


def _rossmann_layout(frame: pd.DataFrame) -> pd.DataFrame:
    dates = pd.to_datetime(frame[columns.SALES_DATE])
    return pd.DataFrame(
        {
            "Store": frame[columns.STORE_ID],
            "Product": frame[columns.PRODUCT_ID],
            "DayOfWeek": dates.dt.dayofweek + 1,
            "Date": dates.dt.strftime("%Y-%m-%d"),
            "Sales": frame[columns.SALES].astype("int64"),
            "Customers": frame[columns.CUSTOMERS],
            "Open": frame[columns.OPEN],
            "Promo": frame[columns.PROMO],
            "StateHoliday": frame[columns.STATE_HOLIDAY],
            "SchoolHoliday": frame[columns.SCHOOL_HOLIDAY],
        },
        columns=list(SALES_HEADER),
    )


def _copy_store_files(source: Path, out: Path, chosen: set[int]) -> None:
    """The store metadata files of `source`, with the chosen stores' rows only."""
    for names in (loading.STORE_FILE_NAMES, loading.STATE_FILE_NAMES):
        path = files.find_file(source, *names)
        if path is None:
            continue
        target = out / names[0]
        if path.resolve() == target.resolve():
            continue
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        kept = table[table["Store"].astype(int).isin(chosen)]
        with open(target, "w", newline="") as handle:
            kept.to_csv(handle, index=False)
