"""The deployment tests' helpers: the pinned tools and the chart rendered per scenario.

The tools (Helm, actionlint, checkov, kubernetes-validate) are installed by
`scripts/install-deploy-tools.sh` (a prerequisite of `make test`) into SFMLOPS_TOOLS_DIR.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy import celtypes

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "sfmlops-helm"
NAMESPACE = "sfmlops"
RELEASE = "sfmlops"
ENDPOINTS = "sfmlops-endpoints"

# The renderings the tests check, and the CRD-backed APIs a cluster prepared by
# scripts/deploy.sh serves: shared with the chart linter (scripts/lint-chart.py).
_CHART_SCENARIOS = yaml.safe_load((ROOT / "scripts" / "chart-scenarios.yaml").read_text())
# Values files (relative to ROOT) and --set overrides of each scenario.
SCENARIOS: dict[str, tuple[list[str], list[str]]] = {
    name: (list(scenario["files"]), list(scenario["set"]))
    for name, scenario in _CHART_SCENARIOS["scenarios"].items()
}
CLUSTER_APIS: list[str] = list(_CHART_SCENARIOS["cluster_apis"])
LINT_CHART = ROOT / "scripts" / "lint-chart.py"


def tools_dir() -> Path:
    """Where scripts/install-deploy-tools.sh links the tools."""
    configured = os.environ.get("SFMLOPS_TOOLS_DIR")
    base = Path(configured) if configured else Path.home() / ".cache" / "sfmlops-tools"
    return base / "bin"


def tool(name: str) -> str:
    """Path of one installed tool; fails with the command that installs it."""
    path = tools_dir() / name
    if not path.exists():
        pytest.fail(f"{path} missing: run `make deploy-tools` (scripts/install-deploy-tools.sh)")
    return str(path)


def run(
    command: list[str],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    explain: Callable[[], str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool from the repository root, capturing its output; with `check`, a failure fails
    the test with the end of that output and what `explain` adds (a stack's state, say)."""
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            + (f"\n{explain()}" if explain else "")
        )
    return result


def helm_args(files: list[str], overrides: list[str]) -> list[str]:
    """The -f/--set arguments of one scenario."""
    args = ["-f", str(CHART / "values.yaml")]
    for file in files:
        args += ["-f", str(ROOT / file)]
    for override in overrides:
        args += ["--set", override]
    return args


def helm_template(
    files: list[str],
    overrides: list[str],
    *,
    check: bool = True,
    api_versions: list[str] | None = None,
    extra: list[str] | None = None,
    helm: str = "helm",
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the parent chart as release `sfmlops` in namespace `sfmlops`.

    The cluster it renders for serves `api_versions` (default: every CRD the chart may need).
    `helm` names the installed Helm: `helm` (Helm 3) or `helm4`.
    """
    command = [tool(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for api in CLUSTER_APIS if api_versions is None else api_versions:
        command += ["--api-versions", api]
    return run(command + helm_args(files, overrides) + (extra or []), check=check)


@dataclass(frozen=True)
class Rendered:
    """One scenario's manifests, as text (for the validators) and as objects."""

    name: str
    text: str
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [item for item in self.objects if item["kind"] == kind]

    def get(self, kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        for item in self.objects:
            meta = item["metadata"]
            if item["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
                return item
        return None


def render(name: str) -> Rendered:
    files, overrides = SCENARIOS[name]
    return render_values(name, files, overrides)


def render_values(name: str, files: list[str], overrides: list[str]) -> Rendered:
    """The chart rendered with values files and --set overrides outside the named scenarios."""
    text = helm_template(files, overrides).stdout
    objects = [item for item in yaml.safe_load_all(text) if item]
    return Rendered(name, text, objects)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of a file such as helm-releases.env (comments and blanks skipped)."""
    pairs = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


# The pinned releases (helm-releases.env): names, namespaces, chart versions.
RELEASES = read_env_file(ROOT / "helm-releases.env")


def pod_specs(item: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, pod spec) of every pod template an object carries, RayCluster groups included."""
    kind, name = item["kind"], item["metadata"]["name"]
    spec = item.get("spec", {})
    if kind in {"Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"}:
        yield f"{kind}/{name}", spec["template"]["spec"]
    elif kind == "CronJob":
        yield f"{kind}/{name}", spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "Pod":
        yield f"{kind}/{name}", spec
    elif kind == "RayCluster":
        yield f"{kind}/{name}/head", spec["headGroupSpec"]["template"]["spec"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"{kind}/{name}/{group['groupName']}", group["template"]["spec"]


def pod_labels(item: Mapping[str, Any]) -> Iterator[dict[str, str]]:
    """Labels of every pod an object creates (KubeRay adds ray.io/cluster to its pods)."""
    kind, spec = item["kind"], item.get("spec", {})
    if kind in {"Deployment", "StatefulSet", "Job"}:
        yield dict(spec["template"]["metadata"].get("labels", {}))
    elif kind == "CronJob":
        yield dict(spec["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {}))
    elif kind == "RayCluster":
        cluster = {"ray.io/cluster": item["metadata"]["name"]}
        yield {**spec["headGroupSpec"]["template"]["metadata"]["labels"], **cluster}
        for group in spec.get("workerGroupSpecs", []):
            yield {**group["template"]["metadata"]["labels"], **cluster}


def admitted(
    rendered: Rendered, target: dict[str, str], source: dict[str, str] | None, namespace: str | None
) -> bool:
    """Whether some NetworkPolicy admits traffic from a pod (labels) or namespace to target."""
    for policy in rendered.of_kind("NetworkPolicy"):
        if not policy["spec"]["podSelector"]["matchLabels"].items() <= target.items():
            continue
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                pod_selector = peer.get("podSelector", {}).get("matchLabels")
                if source is not None and pod_selector and pod_selector.items() <= source.items():
                    return True
                namespaces = peer.get("namespaceSelector", {}).get("matchLabels")
                if namespace is not None and namespaces == {
                    "kubernetes.io/metadata.name": namespace
                }:
                    return True
    return False


def labels_of(rendered: Rendered, kind: str, name: str) -> dict[str, str]:
    """Labels of the (first) pod of one rendered object."""
    return next(pod_labels(rendered.get(kind, name)))  # type: ignore[arg-type]


def _cel_join(items: Any, separator: Any = "") -> Any:
    """Kubernetes' CEL `list.join(separator)` (its strings library), which cel-python lacks."""
    return celtypes.StringType(str(separator).join(str(item) for item in items))


def _cel(expression: str, activation: dict[str, Any]) -> Any:
    environment = celpy.Environment()
    program = environment.program(environment.compile(expression), functions={"join": _cel_join})
    return program.evaluate(activation)


def admission_refusals(
    policy: Mapping[str, Any], pod: Mapping[str, Any], username: str, operation: str = "CREATE"
) -> list[str] | None:
    """What a ValidatingAdmissionPolicy says of `pod` created (or updated) by `username`.

    Its CEL is evaluated by cel-python as the API server would: matchConditions, then the
    variables in order, then each validation. Returns None when the matchConditions leave the
    request alone, else the messages of the validations that fail ([]: admitted). An expression
    that errors counts as failing, as with failurePolicy Fail.
    """
    spec = policy["spec"]
    activation: dict[str, Any] = {
        "object": celpy.json_to_cel(dict(pod)),
        "request": celpy.json_to_cel({"userInfo": {"username": username}, "operation": operation}),
    }
    for condition in spec.get("matchConditions", []):
        if _cel(condition["expression"], activation) != celtypes.BoolType(True):
            return None
    variables: dict[str, Any] = {}
    for variable in spec.get("variables", []):
        activation["variables"] = celtypes.MapType(
            {celtypes.StringType(k): v for k, v in variables.items()}
        )
        variables[variable["name"]] = _cel(variable["expression"], activation)
    activation["variables"] = celtypes.MapType(
        {celtypes.StringType(k): v for k, v in variables.items()}
    )
    refusals = []
    for validation in spec["validations"]:
        try:
            admitted = _cel(validation["expression"], activation) == celtypes.BoolType(True)
        except celpy.CELEvalError:
            admitted = False
        if not admitted:
            message = validation.get("message")
            if message is None:
                message = str(_cel(validation["messageExpression"], activation))
            refusals.append(message)
    return refusals
