"""Security of the rendered manifests: checkov (run by `make lint-deploy`) with documented skips
only, plus the invariants that may never be skipped, checked directly (also inside RayCluster
pods, which checkov skips)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.deploy import (
    CHART,
    LINT_CHART,
    ROOT,
    Rendered,
    load_yaml,
    pod_specs,
    run,
)

# checkov checks that guard what must always hold: non-root, no privileged pods, no privilege
# escalation, resource requests and limits, no `latest` tags.
NEVER_SKIPPED = {
    "CKV_K8S_6",  # root containers (pod)
    "CKV_K8S_16",  # privileged containers
    "CKV_K8S_20",  # allowPrivilegeEscalation
    "CKV_K8S_23",  # admission of root containers
    "CKV_K8S_10",  # CPU requests
    "CKV_K8S_11",  # CPU limits
    "CKV_K8S_12",  # memory requests
    "CKV_K8S_13",  # memory limits
    "CKV_K8S_14",  # image tag fixed, not latest or blank
}
SKIPS_FILE = CHART / "checkov-skips.yaml"
KAFKA_MANIFEST = ROOT / "tests" / "cluster" / "kafka.yaml"


def accepted_skips() -> dict[str, str]:
    skips: dict[str, str] = load_yaml(SKIPS_FILE)
    return skips


def test_every_accepted_skip_has_a_reason_and_none_is_forbidden() -> None:
    skips = accepted_skips()
    assert skips, "checkov-skips.yaml is empty"
    for check, reason in skips.items():
        assert re.fullmatch(r"CKV2?_K8S_\d+", check), check
        assert len(reason.split()) >= 8, f"{check}: give the reason"
    assert not NEVER_SKIPPED & skips.keys()
    # Per-workload skips are annotations in the templates: none may name a guarded check.
    annotated = set()
    for template in (CHART / "templates").glob("*.yaml"):
        annotated |= set(
            re.findall(r"checkov\.io/skip\d+:\s*(CKV2?_K8S_\d+)=\S", template.read_text())
        )
    assert not NEVER_SKIPPED & annotated


def test_the_chart_linter_would_catch_a_root_privileged_pod(tmp_path: Path) -> None:
    # Guards the checkov scan of `make lint-deploy` (scripts/lint-chart.py).
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: sfmlops}\n"
        "spec:\n  containers:\n    - name: c\n      image: busybox:latest\n"
        "      securityContext: {privileged: true, runAsUser: 0}\n"
    )
    result = run(
        [sys.executable, str(LINT_CHART), "--manifests", str(tmp_path / "bad.yaml")], check=False
    )
    assert result.returncode != 0
    for check in ("CKV_K8S_16", "CKV_K8S_14", "CKV_K8S_20"):
        assert f"checkov [manifests]: {check} " in result.stdout


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def test_every_container_is_non_root_unprivileged_and_bounded(rendered: Rendered) -> None:
    problems = []
    for item in rendered.objects:
        for label, pod in pod_specs(item):
            pod_context = pod.get("securityContext", {})
            for container in _containers(pod):
                where = f"{label}/{container['name']}"
                context = container.get("securityContext", {})
                if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
                    problems.append(f"{where}: runAsNonRoot not set")
                if context.get("runAsUser", pod_context.get("runAsUser")) in (None, 0):
                    problems.append(f"{where}: no non-zero runAsUser")
                if context.get("privileged", False):
                    problems.append(f"{where}: privileged")
                if context.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{where}: allowPrivilegeEscalation not false")
                if context.get("capabilities", {}).get("drop") != ["ALL"]:
                    problems.append(f"{where}: capabilities not dropped")
                resources = container.get("resources", {})
                for kind in ("requests", "limits"):
                    if not {"cpu", "memory"} <= resources.get(kind, {}).keys():
                        problems.append(f"{where}: {kind} cpu/memory missing")
                image = container["image"]
                tag = image.split("@")[0].rsplit("/", 1)[-1].partition(":")[2]
                if not tag or tag == "latest":
                    problems.append(f"{where}: image {image} not pinned")
            if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
                problems.append(f"{label}: shares a host namespace")
    assert not problems, "\n".join(problems)


def test_root_filesystems_are_read_only_except_documented(rendered: Rendered) -> None:
    writable = []
    for item in rendered.objects:
        annotations = item["metadata"].get("annotations", {})
        documented = any(v.startswith("CKV_K8S_22=") for v in annotations.values())
        for label, pod in pod_specs(item):
            for container in _containers(pod):
                if (
                    not container.get("securityContext", {}).get("readOnlyRootFilesystem")
                    and not documented
                ):
                    writable.append(f"{label}/{container['name']}")
    assert not writable


def test_autoscaler_sidecar_is_hardened(rendered: Rendered) -> None:
    cluster = rendered.of_kind("RayCluster")[0]
    options = cluster["spec"]["autoscalerOptions"]
    assert options["securityContext"]["allowPrivilegeEscalation"] is False
    assert options["securityContext"]["runAsNonRoot"] is True
    assert {"cpu", "memory"} <= options["resources"]["limits"].keys()


def test_no_manifest_mounts_the_service_account_token_needlessly(rendered: Rendered) -> None:
    # Only the Ray head keeps its token: KubeRay's autoscaler sidecar calls the Kubernetes API.
    mounting = [
        label
        for item in rendered.objects
        for label, pod in pod_specs(item)
        if pod.get("automountServiceAccountToken") is not False and not label.endswith("/head")
    ]
    assert not mounting


def test_skip_file_is_not_packaged() -> None:
    ignored = (CHART / ".helmignore").read_text().split()
    assert "checkov-skips.yaml" in ignored
    assert (ROOT / "sfmlops-helm" / "checkov-skips.yaml").exists()


# What the Pod Security "restricted" profile admits (kubernetes.io/docs/concepts/security/
# pod-security-standards): the namespace can enforce it only while every pod passes.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
RESTRICTED_SECCOMP = {"RuntimeDefault", "Localhost"}


def _restricted_problems(objects: list[dict[str, Any]]) -> tuple[list[str], int]:
    """What keeps each pod of `objects` out of the restricted profile, and how many containers
    were checked."""
    problems, checked = [], 0
    for item in objects:
        for label, pod in pod_specs(item):
            pod_context = pod.get("securityContext", {})
            pod_seccomp = pod_context.get("seccompProfile", {}).get("type")
            for volume in pod.get("volumes", []):
                kinds = set(volume) - {"name"}
                if not kinds <= RESTRICTED_VOLUMES:
                    problems.append(f"{label}: volume {volume['name']} is {sorted(kinds)}")
            containers = _containers(pod)
            if item["kind"] == "RayCluster" and label.endswith("/head"):
                # KubeRay adds the autoscaler sidecar with the chart's autoscalerOptions.
                options = item["spec"].get("autoscalerOptions", {})
                containers = [*containers, {"name": "autoscaler", **options}]
            for container in containers:
                checked += 1
                where = f"{label}/{container['name']}"
                context = container.get("securityContext", {})
                seccomp = context.get("seccompProfile", {}).get("type", pod_seccomp)
                if seccomp not in RESTRICTED_SECCOMP:
                    problems.append(f"{where}: seccompProfile {seccomp}")
                if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
                    problems.append(f"{where}: runAsNonRoot not set")
                if context.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{where}: allowPrivilegeEscalation not false")
                capabilities = context.get("capabilities", {})
                if capabilities.get("drop") != ["ALL"]:
                    problems.append(f"{where}: capabilities not dropped")
                if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
                    problems.append(f"{where}: adds {capabilities['add']}")
                if any(port.get("hostPort") for port in container.get("ports", [])):
                    problems.append(f"{where}: hostPort")
    return problems, checked


def test_every_pod_passes_the_restricted_pod_security_profile(rendered: Rendered) -> None:
    problems, checked = _restricted_problems(rendered.objects)
    assert checked >= 8
    assert not problems, "\n".join(problems)


def test_the_local_kafka_pod_passes_the_restricted_pod_security_profile() -> None:
    # scripts/deploy.sh's local mode enforces "restricted" in Kafka's namespace too.
    objects = list(yaml.safe_load_all(KAFKA_MANIFEST.read_text()))
    problems, checked = _restricted_problems(objects)
    assert checked == 1
    assert not problems, "\n".join(problems)
    (kafka,) = (item for item in objects if item["kind"] == "StatefulSet")
    (container,) = kafka["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
