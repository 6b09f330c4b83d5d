"""The metric names the dashboards and alert rules query, and those the API and the stream job
expose."""

from __future__ import annotations

import functools
import re
import tempfile
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.services.api import create_app
from sfmlops.services.stream_metrics import StreamMetrics
from sfmlops.settings import Settings
from tests.support.deploy import CHART, ROOT

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
KNOWN_METRICS = ROOT / "tests" / "deploy" / "data" / "metric-names.txt"
# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
    "clamp_min", "clamp_max", "by", "without", "on", "ignoring", "and", "or", "unless", "le",
    "bool", "offset", "topk", "bottomk", "abs", "delta", "deriv", "time", "vector", "scalar",
}  # fmt: skip


def queried_metrics(dashboard: dict[str, Any]) -> set[str]:
    """Metric names in every panel query of a dashboard (label matchers and groupings removed)."""
    names = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r"\{[^}]*\}", "", target["expr"])  # label matchers
            expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # groupings
            expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
            for word in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
                if word not in PROMQL_WORDS and not re.fullmatch(r"e\d*", word):
                    names.add(word)
    return names


SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}


@functools.cache
def api_metrics() -> frozenset[str]:
    """Metric names in a /metrics capture of the real API, after a few requests."""
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(_env_file=None, home=Path(home))
        engine = make_engine(settings.effective_database_url)
        migrate(engine)
        with TestClient(create_app(settings, engine=engine)) as client:
            client.get("/v1/stores")
            exposition = client.get("/metrics").text
        engine.dispose()
    names = set()
    for family in text_string_to_metric_families(exposition):
        names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))}
    return frozenset(names)


def stream_metric_names() -> set[str]:
    """Metric names the stream job serves on SFMLOPS_STREAM_METRICS_PORT."""
    names = set()
    for family in StreamMetrics().registry.collect():
        names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))}
    return names


def known_metrics() -> set[str]:
    lines = KNOWN_METRICS.read_text().splitlines()
    ray = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    return ray | api_metrics() | stream_metric_names()
