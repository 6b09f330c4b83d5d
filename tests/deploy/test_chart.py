"""The parent chart lints, renders, and every manifest is valid Kubernetes (CRDs included)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import (
    CHART,
    LINT_CHART,
    NAMESPACE,
    SCENARIOS,
    Rendered,
    helm_template,
    load_yaml,
    pod_labels,
    pod_specs,
    run,
    tool,
)

# The Helms users run: Helm 3 (`helm`) and Helm 4 (`helm4`), both pinned in install-helm.sh;
# `make lint-deploy` lints the chart with both (scripts/lint-chart.py).
HELMS = ("helm", "helm4")


def _objects(manifests: str) -> list[dict[str, Any]]:
    """The rendered objects, generated secret values masked (each rendering draws new ones)."""
    objects = [item for item in yaml.safe_load_all(manifests) if item]
    for item in objects:
        if item["kind"] == "Secret":
            item["data"] = {key: len(value) for key, value in item.get("data", {}).items()}
    return objects


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_4_renders_what_helm_3_renders(scenario: str) -> None:
    files, overrides = SCENARIOS[scenario]
    helm_3 = _objects(helm_template(files, overrides).stdout)
    helm_4 = _objects(helm_template(files, overrides, helm="helm4").stdout)
    assert helm_3, "nothing rendered"
    assert helm_4 == helm_3


def test_the_pinned_helms_are_3_and_4() -> None:
    # Guards the tests above against both names pointing at one Helm.
    versions = [run([tool(helm), "version", "--short"]).stdout for helm in HELMS]
    assert versions[0].startswith("v3."), versions
    assert versions[1].startswith("v4."), versions


def test_the_chart_linter_rejects_an_invalid_manifest(tmp_path: Path) -> None:
    # Guards `make lint-deploy` (scripts/lint-chart.py): a misspelt field fails strict validation.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: y}\n"
        "spec: {ports: [{port: 80, targetPrt: 8080}]}\n"
    )
    result = run([sys.executable, str(LINT_CHART), "--manifests", str(broken)], check=False)
    assert result.returncode != 0
    assert "'targetPrt' was unexpected" in result.stdout


# The chart's only cluster-scoped objects: the admission policy on Airflow's task pods (its
# name carries the namespace, so two releases do not collide).
CLUSTER_SCOPED = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def test_every_object_has_a_namespace(rendered: Rendered) -> None:
    missing = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in rendered.objects
        if not o["metadata"].get("namespace") and o["kind"] not in CLUSTER_SCOPED
    ]
    assert not missing
    for item in rendered.objects:
        if item["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in item["metadata"]
            assert item["metadata"]["name"].endswith(f"-{NAMESPACE}")


def _required(mapping: dict[str, Any], keys: list[str], where: str) -> list[str]:
    return [f"{where}: missing {key}" for key in keys if mapping.get(key) in (None, "", [], {})]


def test_raycluster_has_what_kuberay_requires(rendered: Rendered) -> None:
    clusters = rendered.of_kind("RayCluster")
    assert len(clusters) == 1
    cluster = clusters[0]
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    problems = _required(spec, ["rayVersion", "headGroupSpec", "workerGroupSpecs"], "spec")
    head = spec["headGroupSpec"]
    problems += _required(head, ["template", "rayStartParams"], "headGroupSpec")
    head_pod = head["template"]["spec"]
    head_ports = {
        port["name"]: port["containerPort"] for port in head_pod["containers"][0]["ports"]
    }
    # The job API (dashboard port) is how training is submitted; the client port serves ray://.
    assert head_ports["dashboard"] == 8265
    assert head_ports["client"] == 10001
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    for group in spec["workerGroupSpecs"]:
        where = f"workerGroupSpecs[{group.get('groupName')}]"
        problems += _required(group, ["groupName", "template"], where)
        for key in ("minReplicas", "maxReplicas", "replicas"):
            if not isinstance(group.get(key), int):
                problems.append(f"{where}: {key} must be an integer")
        if not group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]:
            problems.append(f"{where}: replicas outside [minReplicas, maxReplicas]")
    assert spec["enableInTreeAutoscaling"] is True
    for label, pod in pod_specs(cluster):
        if len(pod["containers"]) < 1 or not pod["containers"][0].get("image"):
            problems.append(f"{label}: the Ray container must come first and name its image")
    assert not problems, problems


def test_ray_overlay_resizes_the_workers(rendered_all: dict[str, Rendered]) -> None:
    default = rendered_all["defaults"].of_kind("RayCluster")[0]["spec"]["workerGroupSpecs"][0]
    tuned = rendered_all["ray"].of_kind("RayCluster")[0]["spec"]["workerGroupSpecs"][0]
    assert tuned["maxReplicas"] == 4
    assert default["maxReplicas"] == 2
    limits = tuned["template"]["spec"]["containers"][0]["resources"]
    assert limits["requests"] == limits["limits"]


def test_monitors_select_existing_ports(rendered: Rendered) -> None:
    services = {s["metadata"]["name"]: s for s in rendered.of_kind("Service")}
    for monitor in rendered.of_kind("ServiceMonitor"):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        spec = monitor["spec"]
        assert spec["endpoints"]
        assert spec["selector"]["matchLabels"]
        matched = [
            s
            for s in services.values()
            if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, monitor["metadata"]["name"]
        port_names = {port["name"] for port in matched[0]["spec"]["ports"]}
        assert {endpoint["port"] for endpoint in spec["endpoints"]} <= port_names
    for monitor in rendered.of_kind("PodMonitor"):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector, monitor["metadata"]["name"]
        # Every port scraped is a named port of some pod the monitor selects.
        selected = [
            pod
            for item in rendered.objects
            for labels, (_, pod) in zip(pod_labels(item), pod_specs(item), strict=False)
            if selector.items() <= labels.items()
        ]
        assert selected, monitor["metadata"]["name"]
        ports = {
            p["name"] for pod in selected for c in pod["containers"] for p in c.get("ports", [])
        }
        assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports
        if monitor["metadata"]["name"] != "sfmlops-ray":
            continue
        cluster = rendered.of_kind("RayCluster")[0]
        assert selector == {"ray.io/cluster": cluster["metadata"]["name"]}
        for label, pod in pod_specs(cluster):
            names = {port["name"] for port in pod["containers"][0]["ports"]}
            assert "metrics" in names, label
        assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == [
            "metrics",
            "as-metrics",
        ]
        head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert {"name": "as-metrics", "containerPort": 44217} in head["ports"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("api.image.tag=latest", "/api/image/tag"),
        ("global.imageTag=latest", "/global/imageTag"),
        ("mlflow.artifacts.type=nfs", "/mlflow/artifacts/type"),
        ("mlflow.replicas=2", "needs mlflow.artifacts.type=bucket"),
        ("postgresql.enabled=false", "externalDatabase"),
        ("unknownKey=1", "unknownKey"),
        ("postgresql.config.Shared-Buffers=1GB", "Shared-Buffers"),
    ],
)
def test_bad_values_are_refused(override: str, message: str) -> None:
    result = helm_template([], [override], check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_postgresql_runs_with_the_configured_settings(rendered_all: dict[str, Rendered]) -> None:
    config = load_yaml(CHART / "values.yaml")["postgresql"]["config"]
    statefulset = rendered_all["defaults"].get("StatefulSet", "sfmlops-postgresql")
    assert statefulset is not None
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]

    assert args[0::2] == ["-c"] * len(config)
    assert dict(arg.split("=", 1) for arg in args[1::2]) == {
        name: str(value) for name, value in config.items()
    }
