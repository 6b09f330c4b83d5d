"""Prometheus metrics of the API: HTTP metrics from the instrumentator plus sfmlops' own."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sfmlops.adapters.db import issued_forecasts, sales_records, training_job_records
from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.core.job_status import JobStatus
from sfmlops.services import realized_accuracy
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
                    counts = training_job_records.count_training_jobs_by_status(connection)
            except SQLAlchemyError:
                counts = {}  # the scrape still answers; /ready reports the database
            for status in JobStatus:
                family.add_metric([status.value], counts.get(status, 0))
        yield family


class ModelQualityCollector(Collector):
    """Realized accuracy, freshness of the actuals and training outcomes, read from the database
    at scrape time (what the alert rules in sfmlops-helm/rules/ watch).

    Args:
        engine: Returns the sales database (None before it is set).
        worst_stores: How many stores get a `store_id` series: those whose last week missed
            most against their baseline.
    """

    def __init__(self, engine: Callable[[], Engine | None], worst_stores: int) -> None:
        self._engine = engine
        self._worst_stores = worst_stores

    def collect(self) -> Iterator[GaugeMetricFamily]:
        age = GaugeMetricFamily(
            "sfmlops_actuals_age_seconds", "Seconds since the newest sales row was stored."
        )
        realized = GaugeMetricFamily(
            "sfmlops_realized_rmspe",
            "Realized RMSPE of the forecasts issued, over the last 7 scored days.",
        )
        coverage = GaugeMetricFamily(
            "sfmlops_realized_interval_coverage",
            "Share of the last 7 scored days' actuals inside the issued intervals.",
            labels=["interval"],
        )
        store_realized = GaugeMetricFamily(
            "sfmlops_store_realized_rmspe",
            "A store's realized RMSPE over the week up to the latest scored day (each day "
            "against the forecast issued closest to it, by its current model), for the stores "
            "furthest above their baseline.",
            labels=["store_id"],
        )
        store_backtest = GaugeMetricFamily(
            "sfmlops_store_backtest_rmspe",
            "The backtest RMSPE of the versions that issued those forecasts, same stores.",
            labels=["store_id"],
        )
        store_baseline = GaugeMetricFamily(
            "sfmlops_store_baseline_rmspe",
            "The RMSPE expected of the store: its backtest RMSPE times the fleet's median "
            "realized/backtest ratio (at least 1), same stores.",
            labels=["store_id"],
        )
        finished = GaugeMetricFamily(
            "sfmlops_training_last_finished_timestamp_seconds",
            "When the latest training job of each outcome and scope finished (Unix time).",
            labels=["status", "scope"],
        )
        engine = self._engine()
        if engine is not None:
            # The scrape still answers without the database; /ready reports it.
            with contextlib.suppress(SQLAlchemyError):
                self._read(
                    engine,
                    age,
                    realized,
                    coverage,
                    (store_realized, store_backtest, store_baseline),
                    finished,
                )
        yield from (
            age,
            realized,
            coverage,
            store_realized,
            store_backtest,
            store_baseline,
            finished,
        )

    def _read(
        self,
        engine: Engine,
        age: GaugeMetricFamily,
        realized: GaugeMetricFamily,
        coverage: GaugeMetricFamily,
        by_store: tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily],
        finished: GaugeMetricFamily,
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        with engine.connect() as connection:
            newest = sales_records.latest_ingested_at(connection, now - dt.timedelta(days=7))
            jobs = training_job_records.last_finished_training_jobs(connection)
            last_scored = issued_forecasts.latest_scored_date(connection)
            if last_scored is not None:
                report = realized_accuracy.realized_accuracy(connection, last_scored, 7)
                worst = realized_accuracy.store_gauges(connection, last_scored, self._worst_stores)
        if newest is not None:
            age.add_metric([], (now - newest).total_seconds())
        for (status, scope), stamp in sorted(jobs.items()):
            finished.add_metric([status, scope], stamp.timestamp())
        if last_scored is None:
            return
        if not math.isnan(report.overall[metrics.RMSPE]):
            realized.add_metric([], report.overall[metrics.RMSPE])
        for interval, name in (("80", metrics.COVERAGE_80), ("95", metrics.COVERAGE_95)):
            if not math.isnan(report.overall[name]):
                coverage.add_metric([interval], report.overall[name])
        names = (
            realized_accuracy.REALIZED_RMSPE,
            issued_forecasts.BACKTEST_RMSPE,
            realized_accuracy.BASELINE_RMSPE,
        )
        for row in worst.to_dict("records"):
            store = str(int(row[columns.STORE_ID]))
            for family, name in zip(by_store, names, strict=True):
                family.add_metric([store], float(row[name]))


def scrape_registry(
    app_registry: CollectorRegistry, database_collectors: Sequence[Collector]
) -> CollectorRegistry:
    """The registry to expose: this process's, or every worker's under gunicorn."""
    if MULTIPROCESS_ENV not in os.environ:
        return app_registry
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    for collector in database_collectors:
        registry.register(collector)
    return registry
