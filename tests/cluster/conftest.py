"""The local Kubernetes cluster the cluster tier runs against, and sfmlops deployed on it.

Session fixtures, in the order a user goes: `scripts/local-cluster.sh up` on an empty state,
the sfmlops images (`make images` builds them; this tier takes each one's content-hash tag from
`scripts/images.sh tag`) loaded into the cluster's containerd, then
`SFMLOPS_RELEASES=local scripts/deploy.sh up`. Teardown, pass or fail:
`scripts/local-cluster.sh down` and `reset`, which leave nothing running or mounted (the
loaded images stay in the cluster's image store for the next run). `make cluster-test` runs
the tier (SFMLOPS_CLUSTER_TEST=1); the cluster needs root, and the Compose stack must be down
(both at once do not fit two cores).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.deploy import run as run_tool

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "sfmlops"
RELEASE = "sfmlops"
CLUSTER = ROOT / "scripts" / "local-cluster.sh"
# Images the local deployment runs (sfmlops-<name>), with the stand-ins of PostgreSQL and Kafka
# (STAND_INS). `make test` copies them into the cluster's image store ahead of this tier
# (scripts/background-builds.sh, the same lists): then load-images finds each one there and only
# gives it this tier's name.
IMAGES = ["forecast-api", "web-ui", "training", "mlflow", "stream-processor", "data-producer"]
STAND_INS = ["postgres", "kafka"]
TIMELINE = ROOT / "test-artifacts" / "cluster-timeline.txt"


def tools_bin() -> Path:
    """Where scripts/install-deploy-tools.sh links Helm (make deploy-tools)."""
    base = os.environ.get("SFMLOPS_TOOLS_DIR") or str(Path.home() / ".cache" / "sfmlops-tools")
    return Path(base) / "bin"


@dataclass
class Timeline:
    """Seconds each phase took, printed at the end (figures for docs/benchmarks.md come from
    benchmarks/cluster_deploy.py; these only tell where a slow run spent its time)."""

    started: float = field(default_factory=time.monotonic)
    phases: list[tuple[str, float]] = field(default_factory=list)

    def mark(self, phase: str) -> None:
        self.phases.append((phase, time.monotonic() - self.started))
        line = f"cluster test: {phase} at {self.phases[-1][1]:.0f} s"
        print(line, flush=True)
        # Also kept in a file: pytest shows a passing session's output only with -s.
        TIMELINE.parent.mkdir(exist_ok=True)
        with TIMELINE.open("a") as timeline:
            timeline.write(line + "\n")


@dataclass
class Cluster:
    """The running cluster: kubectl and helm against it, and the ingress URL."""

    env: dict[str, str]
    ingress_url: str
    timeline: Timeline

    def run(
        self, command: list[str], *, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_tool(command, check=check, env=self.env, timeout=timeout)

    def kubectl(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        return self.run(["kubectl", *args], timeout=timeout, check=check).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def helm(self, *args: str, timeout: float = 900) -> str:
        return self.run([str(tools_bin() / "helm"), *args], timeout=timeout).stdout

    def deploy(self, command: str, *extra_env: tuple[str, str], timeout: float = 900) -> str:
        env = dict(extra_env)
        saved, self.env = self.env, self.env | env
        try:
            return self.run(["scripts/deploy.sh", command], timeout=timeout).stdout
        finally:
            self.env = saved

    def diagnose(self, logs_of: tuple[str, ...] = ()) -> str:
        """What a failure message needs: pods, events, the logs of every pod not Ready.

        Args:
            logs_of: kubectl targets (`deploy/NAME`) whose logs are shown even when Ready: a
                Ready pod can still be the one that did not do its work (a stream job that
                reads nothing).
        """
        parts = [
            self.kubectl("get", "pods,jobs,raycluster", "-A", "-o", "wide", check=False),
            self.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False)[-6000:],
        ]
        try:
            pods = self.json("get", "pods", "-n", NAMESPACE)["items"]
        except (subprocess.SubprocessError, json.JSONDecodeError, pytest.fail.Exception):
            pods = []
        for pod in pods:
            name = pod["metadata"]["name"]
            conditions = pod["status"].get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                continue
            restarted = any(
                c.get("restartCount", 0) for c in pod["status"].get("containerStatuses", [])
            )
            for previous in [False, True] if restarted else [False]:
                command = ["logs", "-n", NAMESPACE, name, "--all-containers", "--tail=40"]
                header = f"--- logs of {name}{' (previous container)' if previous else ''}"
                logs = self.kubectl(*command, *(["--previous"] if previous else []), check=False)
                parts.append(f"{header}\n{logs}")
        for target in logs_of:
            command = ["logs", "-n", NAMESPACE, target, "--all-containers", "--tail=80"]
            parts.append(f"--- logs of {target}\n{self.kubectl(*command, check=False)}")
        return "\n".join(parts)

    def wait(
        self,
        condition: Callable[[], Any],
        seconds: float,
        what: str,
        logs_of: tuple[str, ...] = (),
    ) -> Any:
        """Poll until condition() returns something truthy; fail with the cluster's state.

        Args:
            logs_of: As `diagnose`: whose logs the failure shows besides those not Ready.
        """
        deadline = time.monotonic() + seconds
        last = "nothing"  # the condition's last answer, for the failure message
        while True:
            try:
                value = condition()
                last = repr(value)[:500]
            except (
                httpx.HTTPError,
                subprocess.SubprocessError,
                json.JSONDecodeError,
                KeyError,
            ) as error:
                value, last = None, f"{type(error).__name__}: {str(error)[:500]}"
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{what}: not within {seconds:.0f} s (last: {last})\n{self.diagnose(logs_of)}"
                )
            # Each wait ends on average half a poll after its condition holds: short polls (a
            # kubectl call or an HTTP request each) keep that out of the tier's time.
            time.sleep(1)


def _cluster_env() -> tuple[dict[str, str], str]:
    """KUBECONFIG and the ingress URL of the running cluster, kubectl and helm on the PATH."""
    lines = subprocess.run(
        [str(CLUSTER), "env"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    values = dict(
        line.removeprefix("export ").split("=", 1) for line in lines.splitlines() if "=" in line
    )
    # kubectl: the one the cluster script built (its cache, keyed by the Kubernetes version).
    cache = Path(
        os.environ.get("SFMLOPS_CLUSTER_CACHE", Path.home() / ".cache" / "sfmlops-cluster")
    )
    kubectl = sorted(cache.glob("kubernetes-v*/kubectl"))
    path = [str(kubectl[-1].parent) if kubectl else "", str(tools_bin()), os.environ["PATH"]]
    env = os.environ | {
        "KUBECONFIG": values["KUBECONFIG"],
        "PATH": ":".join(p for p in path if p),
        "HELM": str(tools_bin() / "helm"),
    }
    return env, values["SFMLOPS_INGRESS_URL"]


def _cluster_script(command: str, *args: str, timeout: float = 1800) -> None:
    result = subprocess.run(
        [str(CLUSTER), command, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"local-cluster.sh {command} failed:\n{result.stdout}\n{result.stderr}")


def running_compose_projects() -> list[str]:
    """Compose projects of this repository (`sfmlops`, tests' `sfmlops-test-*`) with a running
    container, read from podman's labels (none without podman)."""
    try:
        result = subprocess.run(
            ["podman", "ps", "--format", '{{index .Labels "com.docker.compose.project"}}'],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError:
        return []
    projects = {line.strip() for line in result.stdout.splitlines()}
    return sorted(p for p in projects if p == "sfmlops" or p.startswith("sfmlops-"))


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A fresh cluster (no state left by an earlier run), removed with its state afterwards."""
    if os.geteuid() != 0:
        pytest.fail("the local cluster needs root (a bridge, iptables rules, mounts)")
    if projects := running_compose_projects():
        pytest.fail(
            f"the Compose stack runs ({', '.join(projects)}): stop it first (make compose-down, "
            "or `podman-compose -p PROJECT down`); it and the cluster do not fit two cores together"
        )
    TIMELINE.unlink(missing_ok=True)
    timeline = Timeline()
    _cluster_script("reset")
    try:
        _cluster_script("up")
        timeline.mark("cluster up")
        env, ingress_url = _cluster_env()
        yield Cluster(env, ingress_url, timeline)
    finally:
        _cluster_script("down")
        _cluster_script("reset")
        for phase, seconds in timeline.phases:
            print(f"cluster test: {phase:<40} {seconds:6.0f} s")


def image_tag(cluster: Cluster) -> str:
    """The content-hash tag the images have when built from this tree (`make images`); one tag
    for all, or the tier cannot install them with one global.imageTag.

    SFMLOPS_CLUSTER_IMAGE_TAG names images built before instead (sfmlops-NAME:TAG for each).
    """
    if chosen := os.environ.get("SFMLOPS_CLUSTER_IMAGE_TAG"):
        return chosen
    tags = {
        name: cluster.run(["scripts/images.sh", "tag", name], timeout=600).stdout.strip()
        for name in IMAGES
    }
    missing = [
        f"sfmlops-{name}:{tag}"
        for name, tag in tags.items()
        if cluster.run(
            ["podman", "image", "exists", f"sfmlops-{name}:{tag}"], check=False
        ).returncode
    ]
    if missing:
        pytest.fail(f"images not built from this tree: {', '.join(missing)} (run `make images`)")
    # The chart takes one tag for every image: tag them alike (a cheap podman tag).
    for name, tag in tags.items():
        cluster.run(["podman", "tag", f"sfmlops-{name}:{tag}", f"sfmlops-{name}:{IMAGE_TAG}"])
    return IMAGE_TAG


# One tag for the loaded images, moved to this tree's build on every run (load-images then
# replaces the image only when its ID changed).
IMAGE_TAG = "cluster-test"


@pytest.fixture(scope="session")
def deployed(cluster: Cluster) -> Cluster:
    """sfmlops installed by the local mode of scripts/deploy.sh, its hooks done."""
    tag = image_tag(cluster)
    references = [f"localhost/sfmlops-{name}:{tag}" for name in IMAGES]
    stand_ins = cluster.run(["scripts/compose-images.sh", *STAND_INS], timeout=1800).stdout.split()
    cluster.run([str(CLUSTER), "load-images", *references, *stand_ins], timeout=1200)
    cluster.timeline.mark("images loaded")
    cluster.deploy(
        "up",
        ("SFMLOPS_RELEASES", "local"),
        ("SFMLOPS_IMAGE_TAG", tag),
        ("SFMLOPS_HELM_TIMEOUT", "8m"),
    )
    cluster.timeline.mark("deploy.sh up returned")
    return cluster


@dataclass
class Api:
    """The API through the ingress, with the token from the release's Secret."""

    client: httpx.Client
    token: str

    def get(self, path: str) -> httpx.Response:
        return self.client.get(f"/api{path}", headers=self._auth())

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.client.post(f"/api{path}", json=body, headers=self._auth())

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="session")
def api(deployed: Cluster) -> Iterator[Api]:
    secret = deployed.json("get", "secret", "-n", NAMESPACE, f"{RELEASE}-api-token")
    token = base64.b64decode(secret["data"]["token"]).decode()
    with httpx.Client(base_url=deployed.ingress_url, timeout=60) as client:
        yield Api(client, token)
