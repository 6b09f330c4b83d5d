"""Grafana dashboards: valid JSON, shipped as sidecar ConfigMaps, querying only known metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.deploy import CHART, ROOT, Rendered, load_yaml
from tests.support.metric_names import (
    DASHBOARDS,
    api_metrics,
    known_metrics,
    queried_metrics,
)


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


def test_the_ingestion_dashboard_shows_the_stream_job() -> None:
    # The main ingest path: its lag and batch duration, not only the per-source totals.
    dashboard = json.loads((CHART / "dashboards" / "sfmlops-ingestion.json").read_text())
    assert {
        "sfmlops_stream_records_total",
        "sfmlops_stream_lag_records",
        "sfmlops_stream_batch_duration_seconds_bucket",
    } <= queried_metrics(dashboard)


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
