"""Prometheus metrics of the API: HTTP metrics from the instrumentator plus sfmlops' own."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sfmlops.adapters.db import repository
from sfmlops.services.api.serving import ServedModel

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ApiMetrics:
    """The metrics an API process updates, registered in its own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.forecasts_served = Counter(
            "sfmlops_forecasts_served",
            "Series-days of forecasts returned.",
            ["endpoint"],
            registry=registry,
        )
        self.sales_ingested = Counter(
            "sfmlops_sales_ingested", "Sales records stored.", ["source"], registry=registry
        )
        self.sales_rejected = Counter(
            "sfmlops_sales_rejected",
            "Sales records rejected by validation.",
            ["source"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "sfmlops_dead_letters",
            "Records written to ingest_dead_letters.",
            ["source"],
            registry=registry,
        )
        self.model_info = Gauge(
            "sfmlops_model_info",
            "The champion model version being served (value 1).",
            ["version"],
            registry=registry,
            multiprocess_mode="liveall",
        )
        self._versions_shown: set[str] = set()
        self.champion_rmspe = Gauge(
            "sfmlops_champion_backtest_rmspe",
            "Overall backtest RMSPE of the champion being served.",
            registry=registry,
            multiprocess_mode="liveall",
        )

    def show_model(self, model: ServedModel) -> None:
        """Point the model gauges at the version now served."""
        # A multiprocess gauge keeps a removed label in its file, so the old version is
        # set to 0 rather than removed: `sfmlops_model_info == 1` is the version served.
        for version in self._versions_shown - {model.version}:
            self.model_info.labels(version=version).set(0)
        self.model_info.labels(version=model.version).set(1)
        self._versions_shown.add(model.version)
        if model.rmspe is not None:
            self.champion_rmspe.set(model.rmspe)


class TrainingJobsCollector(Collector):
    """Training jobs by status, read from the database at scrape time (any worker sees all)."""

    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sfmlops_training_jobs", "Training jobs by status.", labels=["status"]
        )
        engine = self._engine()
        if engine is not None:
            try:
                with engine.connect() as connection:
                    counts = repository.count_training_jobs_by_status(connection)
            except SQLAlchemyError:
                counts = {}  # the scrape still answers; /ready reports the database
            for status in repository.TRAINING_JOB_STATUSES:
                family.add_metric([status], counts.get(status, 0))
        yield family


def scrape_registry(
    app_registry: CollectorRegistry, jobs: TrainingJobsCollector
) -> CollectorRegistry:
    """The registry to expose: this process's, or every worker's under gunicorn."""
    if MULTIPROCESS_ENV not in os.environ:
        return app_registry
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(jobs)
    return registry
