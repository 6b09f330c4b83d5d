"""The separate releases: pinned chart versions, and the keys the docs and wiring rely on."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

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


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line.strip())


def _layered(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values files: maps merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _layered(base[key], value)
        else:
            merged[key] = value
    return merged


def test_the_gke_kafka_profile_has_three_brokers_and_two_in_sync_replicas() -> None:
    base = load_yaml(ROOT / "values-kafka.yaml")
    kafka = _layered(base, load_yaml(ROOT / "values-kafka-ha.yaml"))
    brokers = kafka["controller"]["replicaCount"]
    assert brokers == 3
    assert kafka["controller"]["controllerOnly"] is False  # each node is controller and broker
    assert kafka["broker"]["replicaCount"] == 0
    assert kafka["controller"]["podAntiAffinityPreset"] == "hard"
    assert kafka["controller"]["pdb"] == {"create": True, "maxUnavailable": 1}
    config = _properties(kafka["extraConfig"])
    assert config["auto.create.topics.enable"] == "false"
    assert config["min.insync.replicas"] == "2"
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor"):  # fmt: skip
        assert config[key] == "3", key
    assert config["transaction.state.log.min.isr"] == "2"
    assert config["unclean.leader.election.enable"] == "false"
    # Two in sync of three: one broker may be down and writes with acks=all still succeed.
    assert int(config["min.insync.replicas"]) == brokers - 1
    assert kafka["provisioning"]["replicationFactor"] == 3
    topics = {topic["name"]: topic for topic in kafka["provisioning"]["topics"]}
    base_topics = {topic["name"]: topic for topic in base["provisioning"]["topics"]}
    assert set(topics) == set(base_topics)  # the overlay replaces the list: none left out
    for name, topic in topics.items():
        assert topic["replicationFactor"] == brokers
        assert topic["partitions"] == base_topics[name]["partitions"]
        assert topic["config"]["min.insync.replicas"] == "2"
        assert base_topics[name]["config"].items() <= topic["config"].items()
    # The release keeps the single-broker file's listeners, image and network policy.
    assert kafka["listeners"] == base["listeners"]
    assert kafka["image"] == base["image"]
    assert kafka["networkPolicy"] == base["networkPolicy"]


def test_the_gke_deploy_installs_the_three_broker_kafka(tmp_path: Path) -> None:
    workflow = load_yaml(ROOT / ".github" / "workflows" / "deploy.yml")
    env = workflow["jobs"]["deploy"]["env"]
    assert env["SFMLOPS_KAFKA_VALUES"] == "values-kafka-ha.yaml"
    arguments = _deploy_up_arguments(
        tmp_path, {"SFMLOPS_KAFKA_VALUES": env["SFMLOPS_KAFKA_VALUES"]}, RELEASES["KAFKA_RELEASE"]
    )
    files = [arguments[i + 1] for i, arg in enumerate(arguments) if arg == "-f"]
    assert files == ["values-kafka.yaml", "values-kafka-ha.yaml"]
    single = _deploy_up_arguments(tmp_path / "single", {}, RELEASES["KAFKA_RELEASE"])
    assert [single[i + 1] for i, arg in enumerate(single) if arg == "-f"] == ["values-kafka.yaml"]


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


def test_the_releases_in_restricted_namespaces_state_what_the_profile_asks() -> None:
    # scripts/deploy.sh enforces Pod Security "restricted" in these releases' namespaces: every
    # pod must run non-root with a seccomp profile, every container without privilege escalation
    # and with all capabilities dropped. The values state it rather than trust chart defaults.
    def meets_restricted(pod: dict[str, Any], container: dict[str, Any]) -> bool:
        return (
            (pod.get("runAsNonRoot") is True or container.get("runAsNonRoot") is True)
            and (
                "RuntimeDefault"
                in (
                    pod.get("seccompProfile", {}).get("type"),
                    container.get("seccompProfile", {}).get("type"),
                )
            )
            and container.get("allowPrivilegeEscalation") is False
            and container.get("capabilities", {}).get("drop") == ["ALL"]
        )

    airflow = load_yaml(ROOT / "values-airflow.yaml")
    assert meets_restricted(
        airflow["securityContexts"]["pod"], airflow["securityContexts"]["containers"]
    )
    # A pod context replaces the chart's whole default: the image's user is kept.
    assert airflow["securityContexts"]["pod"]["runAsUser"] == 50000
    assert airflow["statsd"]["enabled"] is False  # its own contexts, not the ones above
    operator = load_yaml(ROOT / "values-kuberay-operator.yaml")
    assert meets_restricted(operator["podSecurityContext"], operator["securityContext"])
    kafka = load_yaml(ROOT / "values-kafka.yaml")
    for component in ("controller", "provisioning"):
        assert meets_restricted(
            kafka[component]["podSecurityContext"], kafka[component]["containerSecurityContext"]
        ), component


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
        "-n kuberay-system -f values-kuberay-operator.yaml",
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


def _deploy_up_arguments(
    tmp_path: Path, env: dict[str, str], release: str = RELEASES["SFMLOPS_RELEASE"]
) -> list[str]:
    """The arguments `scripts/deploy.sh up` gives `helm upgrade --install` of `release`
    (sfmlops-helm by default), recorded by a stand-in helm (and kubectl) that installs nothing."""
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
        if args[:3] == ["upgrade", "--install", release]:
            return args[3:]
    pytest.fail(f"scripts/deploy.sh up never installed {release}")


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


def test_the_kafka_sasl_layer_has_one_user_per_client_of_the_chart() -> None:
    sasl = load_yaml(ROOT / "values-kafka-sasl.yaml")
    chart = load_yaml(ROOT / "sfmlops-helm" / "values.yaml")["kafkaAuth"]
    assert sasl["listeners"]["client"]["protocol"] == chart["securityProtocol"] == "SASL_PLAINTEXT"
    assert sasl["sasl"]["enabledMechanisms"] == chart["mechanism"] == "SCRAM-SHA-512"
    assert sasl["sasl"]["client"]["users"] == [
        "admin",
        chart["producer"]["username"],
        chart["stream"]["username"],
    ]
    for role in ("controller", "broker"):
        assert "allow.everyone.if.no.acl.found=false" in sasl[role]["extraConfig"]
