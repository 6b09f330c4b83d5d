"""Test helper: real champions, trained by the real training job into a real registry."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from sfmlops.core.forecasting.executors import SequentialExecutor
from sfmlops.services.model_training import TrainingRequest, run_training
from sfmlops.settings import Settings


def train_champion(settings: Settings, engine: Engine, store_ids: Sequence[int] | None) -> str:
    """Run a seasonal-naive training job (one backtest window) that takes `champion`.

    Without a champion yet, `store_ids` limits the job to those stores; None trains every
    store of the database. Returns the registered version.
    """
    request = TrainingRequest(models=["seasonal_naive"], windows=1, store_ids=store_ids, force=True)
    outcome = run_training(settings, engine, request, SequentialExecutor())
    assert outcome.alias == "champion", outcome.reason
    return outcome.version
