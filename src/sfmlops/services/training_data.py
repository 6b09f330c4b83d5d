"""Training data read from the database: the sales history and store metadata of the stores asked for."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Engine

from sfmlops.adapters.db import sales_records, store_records
from sfmlops.core import columns


class NoTrainingDataError(ValueError):
    """The database has no sales (or none for the stores asked for)."""


@dataclass(frozen=True)
class TrainingData:
    """Sales history and store metadata read for training."""

    history: pd.DataFrame
    stores: pd.DataFrame


def read_training_data(engine: Engine, store_ids: Sequence[int] | None = None) -> TrainingData:
    """Every sales row (of the given stores) and their store metadata.

    Raises:
        NoTrainingDataError: When there is nothing to train on, or stores are unknown.
    """
    with engine.connect() as connection:
        stores = store_records.list_stores(connection)
        if store_ids is not None:
            unknown = sorted(set(store_ids) - set(stores[columns.STORE_ID].astype(int)))
            if unknown:
                raise NoTrainingDataError(f"unknown store(s): {', '.join(map(str, unknown))}")
            stores = stores[stores[columns.STORE_ID].isin(list(store_ids))]
        history = sales_records.read_sales(connection, store_ids=store_ids)
    if history.empty:
        raise NoTrainingDataError("no sales in the database: run `sfmlops load-data` first")
    return TrainingData(history=history, stores=stores.reset_index(drop=True))
