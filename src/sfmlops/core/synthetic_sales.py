"""Synthetic multi-product sales derived from real store sales.

Each store's daily sales (and its days open, promotions and holidays) are split over
`products` products, so the store-level patterns stay real while every product adds its
own share, weekly and yearly profile, promotion sensitivity and noise. Some products are
launched late or discontinued early (their series start late or end early) and some sell
so little that most of their days are zero (intermittent demand).

Deterministic: the same store history, product count and seed give the same frame, and
one store's products do not depend on which other stores are synthesised.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sfmlops.core import columns

LOW_SELLER_FRACTION = 0.2  # products whose expected sales are a few units a day
LAUNCHED_LATE_FRACTION = 0.08  # series that start after the first day
DISCONTINUED_FRACTION = 0.05  # series that end before the last day
DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class ProductProfiles:
    """What every product is like across stores: one entry per product."""

    product_ids: list[str]
    share: np.ndarray  # of the store's sales, before the store's own variation; sums to 1
    weekday: np.ndarray  # (products, 7): multiplier per ISO weekday - 1, mean 1 over open days
    yearly_amplitude: np.ndarray  # relative swing of the yearly cycle
    yearly_phase: np.ndarray  # radians
    promo_lift: np.ndarray  # multiplier on promotion days, on top of the store's own lift
    noise: np.ndarray  # standard deviation of the log noise
    low_seller: np.ndarray  # bool: sold in units a day, Poisson-drawn, many zero days


def product_ids(products: int) -> list[str]:
    """The product ids of a synthetic dataset: P001, P002, ... (zero-padded to sort)."""
    width = max(3, len(str(products)))
    return [f"P{number:0{width}d}" for number in range(1, products + 1)]


def product_profiles(products: int, seed: int) -> ProductProfiles:
    """Draw what each of `products` products is like, deterministically for `seed`."""
    if products < 1:
        raise ValueError(f"products must be at least 1, got {products}")
    rng = np.random.default_rng([seed, 0])
    # A long tail of popularity, as in retail assortments (Zipf-like ranks with jitter).
    popularity = (1.0 / np.arange(1, products + 1) ** 0.8) * rng.lognormal(0.0, 0.3, products)
    low_seller = rng.random(products) < LOW_SELLER_FRACTION if products > 1 else np.zeros(1, bool)
    popularity[low_seller] *= 0.02
    weekday = rng.lognormal(0.0, 0.12, (products, 7))
    weekday /= weekday[:, :6].mean(axis=1, keepdims=True)  # stores rarely open on Sundays
    return ProductProfiles(
        product_ids=product_ids(products),
        share=popularity / popularity.sum(),
        weekday=weekday,
        yearly_amplitude=rng.uniform(0.0, 0.3, products),
        yearly_phase=rng.uniform(0.0, 2 * np.pi, products),
        promo_lift=rng.lognormal(0.0, 0.2, products),
        noise=rng.uniform(0.05, 0.3, products),
        low_seller=low_seller,
    )


def synthesize_store(
    store_sales: pd.DataFrame, profiles: ProductProfiles, seed: int
) -> pd.DataFrame:
    """Split one store's daily sales over the products of `profiles`.

    Args:
        store_sales: One store's canonical sales frame (`columns.SALES_COLUMNS`, one
            product), one row per day.
        profiles: The products (from `product_profiles`).
        seed: The dataset's seed; the store id is mixed in, so stores differ.

    Returns:
        Canonical sales rows (`columns.SALES_COLUMNS`) of every product of the store, sorted
        by product then day. Sales are whole units, zero on closed days; customers are the
        store's customers in proportion to the product's share.
    """
    days = store_sales.sort_values(columns.SALES_DATE).reset_index(drop=True)
    if days[columns.STORE_ID].nunique() != 1 or days[columns.SALES_DATE].duplicated().any():
        raise ValueError("synthetic products split one store's sales of one row per day")
    store_id = int(days[columns.STORE_ID].iloc[0])
    rng = np.random.default_rng([seed, store_id])
    products = len(profiles.product_ids)
    n_days = len(days)
    dates = pd.to_datetime(days[columns.SALES_DATE])
    weekday = dates.dt.dayofweek.to_numpy()  # Monday = 0
    day_of_year = dates.dt.dayofyear.to_numpy()
    is_open = days[columns.OPEN].to_numpy() == 1
    promo = days[columns.PROMO].to_numpy() == 1
    store_total = days[columns.SALES].to_numpy(dtype=float)

    # This store's mix differs from the chain's: its own share per product.
    share = profiles.share * rng.lognormal(0.0, 0.3, products)
    share /= share.sum()
    yearly = 1.0 + profiles.yearly_amplitude[:, None] * np.sin(
        2 * np.pi * day_of_year[None, :] / DAYS_PER_YEAR + profiles.yearly_phase[:, None]
    )
    promo_factor = np.where(promo[None, :], profiles.promo_lift[:, None], 1.0)
    noise = rng.normal(0.0, 1.0, (products, n_days)) * profiles.noise[:, None]
    expected = (
        store_total[None, :]
        * share[:, None]
        * profiles.weekday[:, weekday]
        * yearly
        * promo_factor
        * np.exp(noise - profiles.noise[:, None] ** 2 / 2)
    )
    sales = np.where(profiles.low_seller[:, None], rng.poisson(expected), np.rint(expected)).astype(
        np.int64
    )
    sales[:, ~is_open] = 0

    first_day, last_day = _lifetimes(rng, products, n_days)
    day_index = np.arange(n_days)
    alive = (day_index[None, :] >= first_day[:, None]) & (day_index[None, :] <= last_day[:, None])
    product_of_row, day_of_row = np.nonzero(alive)

    customers = days[columns.CUSTOMERS].to_numpy(dtype=float, na_value=np.nan)
    product_customers = np.rint(customers[None, :] * share[:, None])
    frame = pd.DataFrame(
        {
            columns.STORE_ID: store_id,
            columns.PRODUCT_ID: np.asarray(profiles.product_ids, dtype=object)[product_of_row],
            columns.SALES_DATE: days[columns.SALES_DATE].to_numpy()[day_of_row],
            columns.SALES: sales[product_of_row, day_of_row].astype(float),
            columns.CUSTOMERS: pd.array(
                product_customers[product_of_row, day_of_row], dtype="Int64"
            ),
            columns.OPEN: days[columns.OPEN].to_numpy()[day_of_row],
            columns.PROMO: days[columns.PROMO].to_numpy()[day_of_row],
            columns.STATE_HOLIDAY: days[columns.STATE_HOLIDAY].to_numpy()[day_of_row],
            columns.SCHOOL_HOLIDAY: days[columns.SCHOOL_HOLIDAY].to_numpy()[day_of_row],
        }
    )
    return frame


def synthesize_sales(sales: pd.DataFrame, products: int, seed: int) -> Iterator[pd.DataFrame]:
    """Split every store's daily sales over `products` products, one frame per store.

    Args:
        sales: Canonical sales of one product per store (`columns.SALES_COLUMNS`).
        products: Products per store (at least 1).
        seed: Any integer; the same inputs and seed give the same frames.

    Yields:
        Each store's rows (see `synthesize_store`), stores in ascending id order.
    """
    profiles = product_profiles(products, seed)
    for _, store_sales in sales.groupby(columns.STORE_ID, sort=True):
        yield synthesize_store(store_sales, profiles, seed)


def _lifetimes(
    rng: np.random.Generator, products: int, n_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """First and last day (indexes) each product of a store is sold."""
    first_day = np.zeros(products, dtype=np.int64)
    last_day = np.full(products, n_days - 1, dtype=np.int64)
    if products == 1 or n_days < 4:
        return first_day, last_day  # a store's only product lives as long as the store
    # A late launch or an early end leaves at least a quarter of the period sold.
    launched = rng.random(products) < LAUNCHED_LATE_FRACTION
    first_day[launched] = rng.integers(1, n_days // 2, launched.sum())
    ended = rng.random(products) < DISCONTINUED_FRACTION
    last_day[ended] = rng.integers(3 * n_days // 4, n_days - 1, ended.sum())
    return first_day, last_day
