"""Test helpers: tiny real bundles registered in a real MLflow registry."""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from pathlib import Path

import mlflow

from sfmlops.adapters import mlflow_registry
from sfmlops.core import columns as c
from sfmlops.core.forecasting import training
from sfmlops.core.forecasting.bundle import ForecastBundle
from sfmlops.services import loading
from sfmlops.settings import Settings


def train_bundle(data_folder: Path, store_ids: Collection[int]) -> ForecastBundle:
    """A seasonal-naive bundle (one backtest window) of the given stores of a data folder."""
    dataset = loading.read_dataset(data_folder)
    history = dataset.sales[dataset.sales[c.STORE_ID].isin(list(store_ids))]
    stores = dataset.stores[dataset.stores[c.STORE_ID].isin(list(store_ids))]
    bundle, _ = training.train(history, stores, ["seasonal_naive"], windows=1)
    return bundle


def register_champion(settings: Settings, bundle: ForecastBundle) -> str:
    """Log the bundle as a new registered version, give it `champion`; returns the version."""
    client = mlflow_registry.connect(settings)
    experiment = mlflow_registry.experiment_id(client, settings)
    champion = next(
        row for row in bundle.metadata["reported_metrics"] if row[c.MODEL] == "champion"
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "bundle"
        bundle.save(folder)
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_metric(mlflow_registry.RMSPE_METRIC, champion["rmspe"])
            version = mlflow_registry.register_bundle(folder, run_id=run.info.run_id)
    mlflow_registry.promote(client, version, force=True)
    return version.version
