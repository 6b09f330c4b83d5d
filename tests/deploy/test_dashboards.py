"""Grafana dashboards: valid JSON, shipped as sidecar ConfigMaps, querying only known metrics."""

from __future__ import annotations

import functools
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.services.api import create_app
from sfmlops.settings import Settings
from tests.support.deploy import CHART, ROOT, Rendered, load_yaml

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


def known_metrics() -> set[str]:
    lines = KNOWN_METRICS.read_text().splitlines()
    ray = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    return ray | api_metrics()


def test_the_api_capture_holds_its_own_metrics() -> None:
    assert {
        "http_requests_total",
        "sfmlops_training_jobs",
        "sfmlops_sales_ingested_total",
    } <= api_metrics()


def test_the_issue_dashboards_exist() -> None:
    names = {path.stem for path in DASHBOARDS}
    assert names == {
        "sfmlops-api",
        "sfmlops-training",
        "sfmlops-ingestion",
        "sfmlops-model",
        "sfmlops-model-quality",
        "sfmlops-ray",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] == path.stem
    assert dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_queried_metric_is_exposed(path: Path) -> None:
    queried = queried_metrics(json.loads(path.read_text()))
    assert queried
    assert queried <= known_metrics(), sorted(queried - known_metrics())


def test_metric_extraction_sees_through_promql() -> None:
    dashboard = {
        "panels": [
            {
                "targets": [
                    {
                        "expr": 'histogram_quantile(0.9, sum by (le, handler) (rate(a_bucket{status="5xx"}[5m]))) / 1e-9'
                    },
                    {"expr": "sum(ray_tasks) by (State) + b_total"},
                ]
            }
        ]
    }
    assert queried_metrics(dashboard) == {"a_bucket", "ray_tasks", "b_total"}


def test_dashboards_ship_as_sidecar_configmaps(rendered_all: dict[str, Rendered]) -> None:
    rendered = rendered_all["defaults"]
    chart = load_yaml(CHART / "values.yaml")["monitoring"]
    grafana = load_yaml(ROOT / "values-kube-prometheus.yaml")["grafana"]["sidecar"]["dashboards"]
    assert grafana["label"] == chart["dashboards"]["label"]
    assert grafana["labelValue"] == chart["dashboards"]["labelValue"]
    assert grafana["searchNamespace"] == "ALL"
    maps = [
        c
        for c in rendered.of_kind("ConfigMap")
        if chart["dashboards"]["label"] in c["metadata"]["labels"]
    ]
    assert len(maps) == len(DASHBOARDS)
    for config in maps:
        assert config["metadata"]["namespace"] == chart["namespace"]
        (name, text), *_ = config["data"].items()
        assert json.loads(text) == json.loads((CHART / "dashboards" / name).read_text())
        assert (
            config["metadata"]["annotations"][grafana["folderAnnotation"]]
            == chart["dashboards"]["folder"]
        )
