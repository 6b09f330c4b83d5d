"""The separate releases: pinned chart versions, and the keys the docs and wiring rely on."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from sfmlops.settings import Settings
from tests.support.deploy import CHART, RELEASES, ROOT, load_yaml, run, tool

CHARTS = ["KUBERAY_OPERATOR", "INGRESS_NGINX", "KAFKA", "AIRFLOW", "KUBE_PROMETHEUS"]
DOCS = (ROOT / "docs" / "deployment.md").read_text()


@pytest.mark.parametrize("chart", CHARTS)
def test_every_upstream_chart_is_pinned(chart: str) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", RELEASES[f"{chart}_VERSION"]), (
        "an exact version, no range"
    )
    assert RELEASES[f"{chart}_REPO"].startswith(("https://", "oci://"))
    assert RELEASES[f"{chart}_NAMESPACE"]


def test_kafka_values() -> None:
    kafka = load_yaml(ROOT / "values-kafka.yaml")
    assert kafka["kraft"]["enabled"] is True
    # Bitnami's free images live on only in the legacy repository: named explicitly, pinned.
    assert kafka["image"]["repository"] == "bitnamilegacy/kafka"
    assert re.fullmatch(r"\d+\.\d+\.\d+-debian-\d+-r\d+", kafka["image"]["tag"])
    assert kafka["global"]["security"]["allowInsecureImages"] is True
    assert "bitnamilegacy" in (ROOT / "values-kafka.yaml").read_text().split("# Images:")[1]
    assert kafka["fullnameOverride"] == RELEASES["KAFKA_RELEASE"]
    assert kafka["listeners"]["client"]["protocol"] == "PLAINTEXT"
    assert kafka["externalAccess"]["enabled"] is False
    assert kafka["networkPolicy"]["ingressNSMatchLabels"] == {
        "kubernetes.io/metadata.name": RELEASES["SFMLOPS_NAMESPACE"]
    }
    topics = {topic["name"]: topic for topic in kafka["provisioning"]["topics"]}
    defaults = Settings(_env_file=None)
    assert set(topics) == {defaults.kafka_topic}
    assert topics[defaults.kafka_topic]["partitions"] == defaults.kafka_topic_partitions


def test_airflow_values() -> None:
    airflow = load_yaml(ROOT / "values-airflow.yaml")
    assert airflow["executor"] in {"LocalExecutor", "KubernetesExecutor", "CeleryExecutor"}
    assert airflow["postgresql"]["enabled"] is False
    assert airflow["images"]["airflow"]["tag"].startswith(airflow["airflowVersion"] + "-python3.11")
    assert airflow["defaultAirflowTag"] == airflow["images"]["airflow"]["tag"]
    chart = load_yaml(CHART / "values.yaml")
    assert airflow["data"]["metadataSecretName"] == chart["airflowMetadata"]["secretName"]
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert airflow[key] == chart["airflowMetadata"]["keysSecretName"]
    env_from = yaml.safe_load(airflow["extraEnvFrom"])
    assert env_from[0]["configMapRef"]["name"] == chart["endpoints"]["configMapName"]
    assert RELEASES["AIRFLOW_NAMESPACE"] in chart["endpoints"]["namespaces"]
    assert airflow["dags"]["gitSync"]["enabled"] is False


def test_kube_prometheus_values() -> None:
    stack = load_yaml(ROOT / "values-kube-prometheus.yaml")
    spec = stack["prometheus"]["prometheusSpec"]
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert spec["podMonitorSelectorNilUsesHelmValues"] is False
    assert stack["grafana"]["admin"]["existingSecret"]
    assert "adminPassword" not in stack["grafana"]
    chart = load_yaml(CHART / "values.yaml")
    assert chart["monitoring"]["namespace"] == RELEASES["KUBE_PROMETHEUS_NAMESPACE"]
    assert chart["monitoring"]["selectorLabels"]["release"] == RELEASES["KUBE_PROMETHEUS_RELEASE"]
    assert RELEASES["KUBE_PROMETHEUS_NAMESPACE"] in chart["endpoints"]["namespaces"]


def test_ray_overlay_only_touches_the_raycluster() -> None:
    assert set(load_yaml(ROOT / "values-ray.yaml")) == {"ray"}


def test_client_namespaces_match_the_releases() -> None:
    namespaces = load_yaml(CHART / "values.yaml")["clientNamespaces"]
    assert namespaces["ingress"] == RELEASES["INGRESS_NGINX_NAMESPACE"]
    assert namespaces["airflow"] == RELEASES["AIRFLOW_NAMESPACE"]
    assert namespaces["monitoring"] == RELEASES["KUBE_PROMETHEUS_NAMESPACE"]
    assert namespaces["kafka"] == RELEASES["KAFKA_NAMESPACE"]
    assert namespaces["kuberay"] == RELEASES["KUBERAY_OPERATOR_NAMESPACE"]


@pytest.mark.parametrize(
    "command",
    [
        'helm upgrade --install kuberay-operator kuberay/kuberay-operator --version "$KUBERAY_OPERATOR_VERSION"',
        'helm upgrade --install ingress-nginx ingress-nginx/ingress-nginx --version "$INGRESS_NGINX_VERSION"',
        "-f values-kube-prometheus.yaml",
        "-f values-kafka.yaml",
        "-f sfmlops-helm/values.yaml -f values-ray.yaml",
        "-f values-airflow.yaml",
        "scripts/deploy.sh down",
    ],
)
def test_docs_show_the_exact_commands(command: str) -> None:
    assert command in DOCS


def test_docs_quote_the_pinned_versions() -> None:
    for chart in CHARTS:
        assert f"{chart}_VERSION={RELEASES[f'{chart}_VERSION']}" in DOCS


def _deploy_up_arguments(tmp_path: Path, env: dict[str, str]) -> list[str]:
    """The arguments `scripts/deploy.sh up` gives `helm upgrade --install` of sfmlops-helm,
    recorded by a stand-in helm (and kubectl) that installs nothing."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir(parents=True)
    calls.mkdir()
    recorder = f'#!/bin/sh\nprintf "%s\\n" "$@" > "{calls}/$(date +%s%N)"\n'
    for name in ("helm", "kubectl"):
        (bin_dir / name).write_text(recorder)
        (bin_dir / name).chmod(0o755)
    subprocess.run(
        ["scripts/deploy.sh", "up"],
        cwd=ROOT,
        env=os.environ
        | env
        | {"HELM": str(bin_dir / "helm"), "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for call in sorted(calls.iterdir()):
        args = call.read_text().splitlines()
        if args[:3] == ["upgrade", "--install", RELEASES["SFMLOPS_RELEASE"]]:
            return args[3:]
    pytest.fail("scripts/deploy.sh up never installed sfmlops-helm")


def _rendered_images(arguments: list[str]) -> set[str]:
    """Every container image of the chart rendered with the script's arguments."""
    args = [a for a in arguments if a != "--wait"]
    if "--timeout" in args:
        del args[args.index("--timeout") : args.index("--timeout") + 2]
    rendered = run(
        [tool("helm"), "template", RELEASES["SFMLOPS_RELEASE"], *args, "--set", "checkCRDs=false"]
    ).stdout
    images = set()
    for item in yaml.safe_load_all(rendered):
        if item and item["kind"] in ("Deployment", "StatefulSet"):
            images |= {c["image"] for c in item["spec"]["template"]["spec"]["containers"]}
    return images


def test_deploy_script_installs_the_images_loaded_into_the_nodes_by_default(
    tmp_path: Path,
) -> None:
    # The chart's default registry is the deploy workflow's (ghcr.io/sfmlops): without a
    # registry of its own, the script must install the images kind/minikube were given.
    arguments = _deploy_up_arguments(tmp_path / "local", {"SFMLOPS_IMAGE_TAG": "t1"})
    images = _rendered_images(arguments)
    assert "sfmlops-forecast-api:t1" in images
    assert not [image for image in images if image.startswith("ghcr.io/")]
    registry = "europe-docker.pkg.dev/p/r"
    env = {"SFMLOPS_IMAGE_TAG": "t1", "SFMLOPS_IMAGE_REGISTRY": registry}
    images = _rendered_images(_deploy_up_arguments(tmp_path / "registry", env))
    assert f"{registry}/sfmlops-forecast-api:t1" in images
