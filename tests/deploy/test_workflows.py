"""The GitHub workflows and what they must do; `make lint-deploy` runs actionlint and shellcheck."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.support.deploy import ROOT, load_yaml, read_env_file, run, tool

WORKFLOWS = ROOT / ".github" / "workflows"


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Any) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    # The repository's workflows pass `make lint-deploy` (scripts/lint-deploy.sh), which runs
    # the same actionlint.
    result = run([tool("actionlint"), "-no-color", str(broken)], check=False)
    assert result.returncode != 0
    assert 'broken.yml:6:23: property "nope" is not defined' in result.stdout


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def test_ci_runs_make_test_in_debian_bookworm() -> None:
    ci = load_yaml(WORKFLOWS / "ci.yml")
    job = ci["jobs"]["test"]
    assert job["container"]["image"] == "debian:bookworm"
    # podman and the local cluster's kubelet cannot run in an unprivileged container.
    assert "--privileged" in job["container"]["options"].split()
    assert any(step.get("run", "").strip() == "make test" for step in _steps(job))


def test_every_listed_image_is_built_and_tagged_with_the_commit() -> None:
    deploy = load_yaml(WORKFLOWS / "deploy.yml")
    listing = next(
        step["run"] for step in _steps(deploy["jobs"]["discover"]) if step.get("id") == "list"
    )
    assert "scripts/images.sh matrix" in listing
    matrix = json.loads(run(["scripts/images.sh", "matrix"]).stdout)
    names = run(["scripts/images.sh", "list"]).stdout.split()[::3]
    assert [entry["name"] for entry in matrix] == names
    assert all(set(entry) == {"name", "dockerfile", "target"} for entry in matrix)
    build_job = deploy["jobs"]["build"]
    assert build_job["strategy"]["matrix"]["include"] == (
        "${{ fromJSON(needs.discover.outputs.images) }}"
    )
    build = next(
        step
        for step in _steps(build_job)
        if step.get("uses", "").startswith("docker/build-push-action")
    )
    assert build["with"]["context"] == "."
    assert build["with"]["file"] == "${{ matrix.dockerfile }}"
    assert build["with"]["target"] == "${{ matrix.target }}"
    assert build["with"]["push"] is True
    assert build["with"]["tags"] == "${{ steps.tags.outputs.tags }}"
    assert deploy["env"]["IMAGE_TAG"] == "${{ github.sha }}"
    # `make images` builds the same list.
    assert "scripts/images.sh build $(IMAGE_TAG)" in (ROOT / "Makefile").read_text()


def test_every_image_is_published_for_amd64_and_arm64_to_ghcr_and_artifact_registry() -> None:
    deploy = load_yaml(WORKFLOWS / "deploy.yml")
    assert deploy["jobs"]["build"]["permissions"]["packages"] == "write"
    steps = _steps(deploy["jobs"]["build"])
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action"))
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert any(s.get("uses", "").startswith("docker/setup-qemu-action") for s in steps)
    login = next(s for s in steps if s.get("uses", "").startswith("docker/login-action"))
    assert login["with"]["registry"] == "ghcr.io"
    assert "if" not in login  # GHCR always; Google Cloud only where configured
    tags = next(s for s in steps if s.get("id") == "tags")
    # Run the step's script as GitHub would, once without and once with Artifact Registry.
    for configured, expected_registries in (
        ("false", {"ghcr.io/sfmlops"}),
        ("true", {"ghcr.io/sfmlops", "europe-docker.pkg.dev/p/r"}),
    ):
        env = {
            "NAME": "sfmlops-forecast-api",
            "AR_CONFIGURED": configured,
            "AR_REGISTRY": "europe-docker.pkg.dev/p/r",
            "IMAGE_TAG": "abc123",
            "GITHUB_REPOSITORY_OWNER": "SFMLOPS",
            "GITHUB_REF_TYPE": "tag",
            "GITHUB_REF_NAME": "v0.1.0",
        }
        output = _run_step(tags["run"], env)
        names = output.split("tags<<EOF\n")[1].split("EOF")[0].split()
        assert {name.rsplit("/", 1)[0] for name in names} == expected_registries
        assert {name.rsplit(":", 1)[1] for name in names} == {"abc123", "0.1.0"}
        assert all("/sfmlops-forecast-api:" in name for name in names)
    # Only a configured GKE project is deployed to.
    assert deploy["jobs"]["deploy"]["if"] == "vars.GKE_CLUSTER != ''"


def _run_step(script: str, env: dict[str, str]) -> str:
    """Runs a workflow step's bash script with env; returns what it wrote to GITHUB_OUTPUT."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "output"
        output.touch()
        full_env = {"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(output), **env}
        subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script], env=full_env, check=True, timeout=30
        )
        return output.read_text()


def test_deploy_uses_workload_identity_and_the_same_helm_sequence() -> None:
    deploy = load_yaml(WORKFLOWS / "deploy.yml")
    # An OIDC token only for the jobs that authenticate to Google Cloud with it.
    assert "id-token" not in deploy["permissions"]
    assert "packages" not in deploy["permissions"]
    with_token = {
        n for n, job in deploy["jobs"].items() if "id-token" in job.get("permissions", {})
    }
    assert with_token == {"build", "deploy"}
    assert deploy["jobs"]["build"]["permissions"]["packages"] == "write"
    for name in ("build", "deploy"):
        auth = next(
            s
            for s in _steps(deploy["jobs"][name])
            if s.get("uses", "").startswith("google-github-actions/auth")
        )
        assert set(auth["with"]) == {"workload_identity_provider", "service_account"}
    steps = _steps(deploy["jobs"]["deploy"])
    uses = [s.get("uses", "") for s in steps]
    runs = [s.get("run", "") for s in steps]
    assert any(u.startswith("google-github-actions/get-gke-credentials") for u in uses)
    template = next(i for i, r in enumerate(runs) if "scripts/deploy.sh template" in r)
    install = next(i for i, r in enumerate(runs) if "scripts/deploy.sh up" in r)
    assert template < install
    assert any("install-helm.sh" in r for r in runs)
    env = deploy["jobs"]["deploy"]["env"]
    assert env["SFMLOPS_IMAGE_TAG"] == "${{ github.sha }}"
    assert env["SFMLOPS_VALUES"] == "values-gke.yaml"
    # No long-lived key anywhere.
    assert "credentials_json" not in (WORKFLOWS / "deploy.yml").read_text()


def test_dependencies_are_audited_and_kept_current() -> None:
    ci = load_yaml(WORKFLOWS / "ci.yml")
    audit = " ".join(s.get("run", "") for s in _steps(ci["jobs"]["dependency-audit"]))
    assert "pip-audit --strict" in audit
    assert "-r constraints.txt" in audit
    assert "-r requirements-airflow.txt" in audit
    dependabot = load_yaml(WORKFLOWS.parent / "dependabot.yml")
    ecosystems = {update["package-ecosystem"] for update in dependabot["updates"]}
    assert {"github-actions", "pip"} <= ecosystems


def test_every_namespace_the_deploy_script_creates_gets_pod_security_labels() -> None:
    script = (ROOT / "scripts" / "deploy.sh").read_text()
    created = script.count("kubectl create namespace")
    assert created >= 3
    assert script.count('pod_security "$') == created


def _pod_security_of_a_dry_deploy(tmp_path: Path, env: dict[str, str]) -> dict[str, dict[str, str]]:
    """The Pod Security labels `scripts/deploy.sh up` gives each namespace, kubectl and helm
    replaced by programs that only record their arguments."""
    stubs = tmp_path / "bin"
    stubs.mkdir(parents=True)
    calls = tmp_path / "calls"
    for name in ("kubectl", "helm"):
        stub = stubs / name
        stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >>"{calls}"\n')
        stub.chmod(0o755)
    environment = os.environ | env | {"PATH": f"{stubs}:{os.environ['PATH']}"}
    environment.pop("SFMLOPS_RELEASES", None)
    run([str(ROOT / "scripts" / "deploy.sh"), "up"], env=environment, timeout=60)
    labels: dict[str, dict[str, str]] = {}
    for call in calls.read_text().splitlines():
        words = call.split()
        if words[:3] == ["kubectl", "label", "namespace"]:
            pairs = (word.split("=", 1) for word in words[3:] if "=" in word)
            labels[words[3]] = {key.rsplit("/", 1)[1]: value for key, value in pairs}
    return labels


def test_every_namespace_enforces_restricted_unless_its_pods_need_less(tmp_path: Path) -> None:
    releases = {
        key: value
        for key, value in read_env_file(ROOT / "helm-releases.env").items()
        if key.endswith("_NAMESPACE")
    }
    monitoring, sfmlops = releases["KUBE_PROMETHEUS_NAMESPACE"], releases["SFMLOPS_NAMESPACE"]
    ingress = releases["INGRESS_NGINX_NAMESPACE"]

    def expected(own: str, others: str | None = None) -> dict[str, str]:
        # node-exporter's host namespaces and hostPath volumes are beyond baseline: enforced
        # there, its DaemonSet would get no pod. ingress-nginx's controller gains the right to
        # bind ports 80 and 443 through file capabilities: privilege escalation, beyond
        # restricted. Kafka, Airflow and the KubeRay operator run restricted (their values files).
        levels = {
            namespace: own if namespace == sfmlops else "privileged" if namespace == monitoring
            else "baseline" if namespace == ingress else "restricted"
            for namespace in releases.values()
        }  # fmt: skip
        if others:
            levels |= {n: others for n in levels if n not in (sfmlops, monitoring)}
        return levels

    labels = _pod_security_of_a_dry_deploy(tmp_path, {})
    assert set(labels) == set(releases.values()), labels
    for namespace, levels in labels.items():
        # Whatever runs beyond the restricted profile is reported everywhere.
        assert (levels["warn"], levels["audit"]) == ("restricted", "restricted"), namespace
    enforced = {namespace: levels["enforce"] for namespace, levels in labels.items()}
    assert enforced == expected("restricted")
    assert {
        enforced[releases[f"{name}_NAMESPACE"]] for name in ("AIRFLOW", "KUBERAY_OPERATOR")
    } == {"restricted"}

    # The way back if an upgraded upstream chart stops meeting its level.
    looser = _pod_security_of_a_dry_deploy(
        tmp_path / "baseline", {"SFMLOPS_POD_SECURITY_ENFORCE": "baseline"}
    )
    enforced = {namespace: levels["enforce"] for namespace, levels in looser.items()}
    assert enforced == expected("restricted", "baseline")

    # The way back for a workload added to sfmlops's namespace that does not meet it yet.
    own = _pod_security_of_a_dry_deploy(
        tmp_path / "own-baseline", {"SFMLOPS_NAMESPACE_POD_SECURITY": "baseline"}
    )
    enforced = {namespace: levels["enforce"] for namespace, levels in own.items()}
    assert enforced == expected("baseline")


def _uses_lines() -> list[tuple[str, str]]:
    """(file:line, the text after `uses:`) of every step in every workflow."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.y*ml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.match(r"^\s*(?:- )?uses:\s*(.+)$", line)
            if match:
                found.append((f"{path.name}:{number}", match.group(1).strip()))
    return found


def test_every_action_is_pinned_by_commit_with_its_version_named() -> None:
    # A tag can be moved to other code; a commit cannot. The comment names the release, which
    # Dependabot updates together with the SHA.
    uses = _uses_lines()
    assert len(uses) >= 10
    unpinned = [
        f"{where}: {text}"
        for where, text in uses
        if not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*", text)
    ]
    assert not unpinned, "actions not pinned by commit SHA:\n" + "\n".join(unpinned)
    # One release per action across the workflows.
    versions: dict[str, set[str]] = {}
    for _, text in uses:
        versions.setdefault(text.split("@")[0], set()).add(text.split("@")[1])
    assert all(len(refs) == 1 for refs in versions.values()), versions
