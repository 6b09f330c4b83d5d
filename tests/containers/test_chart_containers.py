"""The images started as the chart starts them: the command, arguments, environment, user and
read-only root filesystem (with the chart's writable mounts) of each Deployment, read from
`helm template sfmlops-helm`, reaching the health check the chart probes.

Needs the images of `make images` (the tag is `scripts/images.sh tag NAME`) and a container
engine (podman with the project's containers.conf, or Docker); `make container-test` builds what
is missing and runs these tests.
"""

from __future__ import annotations

import re
import resource
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.containers import ENGINE_ENV, engine, image_of
from tests.support.deploy import ROOT, render
from tests.support.network import free_port

pytestmark = pytest.mark.containers

STARTUP_SECONDS = 420
# Secrets the chart reads from Secrets: test values (never the product's), as long as the API's
# tokens must be (32 characters at least, or every sfmlops process refuses to start).
TEST_SECRET = "container-test-secret-of-32-chars-or-more"
# Deployment name -> (image name, settings that point a store at the container's own disk: the
# test runs each image alone, without the chart's PostgreSQL). The API needs PostgreSQL, MLflow and
# the model signing key to be ready: the Compose and cluster tests start it with those.
# The stream job serves the /metrics its probes ask for once its schema is migrated, before Spark
# looks for the broker (none here: the probes must not depend on Kafka).
DEPLOYMENTS = {
    "sfmlops-dashboard": ("web-ui", {}),
    "sfmlops-mlflow": ("mlflow", {"MLFLOW_BACKEND_STORE_URI": "sqlite:////tmp/mlflow.db"}),
    "sfmlops-stream": (
        "stream-processor",
        {
            "SFMLOPS_DATABASE_URL": "sqlite:////var/lib/sfmlops/sales.db",
            "SFMLOPS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        },
    ),
}


@dataclass(frozen=True)
class Started:
    url: str
    probe_path: str
    probe_headers: dict[str, str]
    logs: Any  # () -> str
    running: Any  # () -> bool


def environment(
    container: dict[str, Any], config_maps: dict[str, dict[str, str]]
) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom ConfigMaps, then env (Secret
    references get a test value), with $(VAR) references expanded."""
    result: dict[str, str] = {}
    for source in container.get("envFrom", []):
        result.update(config_maps[source["configMapRef"]["name"]])
    for variable in container.get("env", []):
        if "value" in variable:
            value = re.sub(r"\$\((\w+)\)", lambda m: result.get(m[1], m[0]), variable["value"])
        elif "secretKeyRef" in variable.get("valueFrom", {}):
            # One value per Secret key, as distinct as the real ones (MLflow's admin, writer and
            # reader must have different names).
            reference = variable["valueFrom"]["secretKeyRef"]
            value = f"{TEST_SECRET}-{reference['name']}-{reference['key']}"
        else:
            continue
        result[variable["name"]] = value
    return result


@pytest.fixture(scope="module")
def chart() -> dict[str, Any]:
    rendered = render("ray")
    config_maps = {
        item["metadata"]["name"]: item.get("data", {}) for item in rendered.of_kind("ConfigMap")
    }
    deployments = {item["metadata"]["name"]: item for item in rendered.of_kind("Deployment")}
    return {"config_maps": config_maps, "deployments": deployments}


def run_as_the_chart_does(
    container_engine: str,
    image: str,
    deployment: dict[str, Any],
    config_maps: dict[str, Any],
    overrides: dict[str, str],
    scratch: Path,
) -> tuple[str, Started]:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert security["readOnlyRootFilesystem"] is True
    name = f"sfmlops-test-{uuid.uuid4().hex[:8]}"
    command = [container_engine, "run", "--detach", "--name", name, "--read-only"]
    if container_engine == "podman":
        command.append("--read-only-tmpfs=false")  # only the chart's mounts are writable
    command += ["--user", f"{security['runAsUser']}:{security['runAsGroup']}"]
    command += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    # Every volume the chart mounts becomes an empty tmpfs the pod's user may write, as the
    # pod's fsGroup makes its volumes (emptyDir; a persistent volume starts empty too).
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        source = volumes.get(mount["name"], {})
        if mount.get("readOnly") and "configMap" in source:
            # A ConfigMap volume: its files, read-only (e.g. MLflow's users script).
            folder = scratch / mount["name"]
            folder.mkdir(mode=0o755)
            for file_name, text in config_maps[source["configMap"]["name"]].items():
                (folder / file_name).write_text(text)
                (folder / file_name).chmod(0o644)
            bind = f"type=bind,source={folder},destination={mount['mountPath']},readonly"
            command += ["--mount", bind]
        elif not mount.get("readOnly"):
            tmpfs = f"type=tmpfs,destination={mount['mountPath']},tmpfs-mode=1777"
            if container_engine == "podman":
                # podman 4.3 ignores tmpfs-mode (of --tmpfs and --mount alike): a tmpfs
                # anywhere but /tmp comes out root's 0755, which the pod's user cannot write
                # (the stream job's SQLite lock file in /var/lib/sfmlops was refused). U=true
                # gives it to the --user instead.
                tmpfs += ",U=true"
            command += ["--mount", tmpfs]
    env = {**environment(container, config_maps), **overrides}
    for key, value in env.items():
        command += ["--env", f"{key}={value}"]
    (port,) = container["ports"]
    host_port = free_port()
    command += ["--publish", f"127.0.0.1:{host_port}:{port['containerPort']}"]
    if container.get("command"):
        command += ["--entrypoint", container["command"][0]]
    command.append(image)
    command += container.get("command", [])[1:] + container.get("args", [])
    started = subprocess.run(
        command, capture_output=True, text=True, check=False, env=ENGINE_ENV, timeout=300
    )
    assert started.returncode == 0, started.stderr
    probe = container["readinessProbe"]["httpGet"]
    headers = {h["name"]: h["value"] for h in probe.get("httpHeaders", [])}

    def logs() -> str:
        # The engine replays the container's stderr on its own stderr: keep both.
        return subprocess.run(
            [container_engine, "logs", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            env=ENGINE_ENV,
        ).stdout

    def running() -> bool:
        state = subprocess.run(
            [container_engine, "inspect", "--format", "{{.State.Running}}", name],
            capture_output=True,
            text=True,
            check=False,
            env=ENGINE_ENV,
        ).stdout.strip()
        return state == "true"

    return name, Started(f"http://127.0.0.1:{host_port}", probe["path"], headers, logs, running)


def wait_healthy(started: Started, path: str) -> int:
    deadline = time.monotonic() + STARTUP_SECONDS
    last = ""
    while time.monotonic() < deadline:
        request = urllib.request.Request(started.url + path, headers=started.probe_headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            last = str(error)
        # A container that exited will never answer: say why at once, not after the deadline.
        if not started.running():
            pytest.fail(f"{started.url}{path}: the container exited ({last}):\n{started.logs()}")
        time.sleep(2)
    pytest.fail(
        f"{started.url}{path} not healthy after {STARTUP_SECONDS} s ({last}):\n{started.logs()}"
    )


@pytest.fixture(params=sorted(DEPLOYMENTS))
def deployment_started(
    request: pytest.FixtureRequest, chart: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[str, Started]]:
    container_engine = engine()
    deployment_name = str(request.param)
    image_name, overrides = DEPLOYMENTS[deployment_name]
    image = image_of(image_name)
    name, started = run_as_the_chart_does(
        container_engine,
        image,
        chart["deployments"][deployment_name],
        chart["config_maps"],
        overrides,
        tmp_path,
    )
    try:
        yield deployment_name, started
    finally:
        # Nothing to keep: killed at once (podman would wait 10 s for a clean stop first;
        # docker's rm --force kills at once).
        kill_now = ["--time", "0"] if container_engine == "podman" else []
        subprocess.run(
            [container_engine, "rm", "--force", *kill_now, name],
            capture_output=True,
            check=False,
            env=ENGINE_ENV,
        )


def test_each_server_image_reaches_the_health_check_the_chart_probes(
    deployment_started: tuple[str, Started],
) -> None:
    deployment_name, started = deployment_started
    assert wait_healthy(started, started.probe_path) == 200, deployment_name


def test_the_chart_runs_the_images_this_test_starts(chart: dict[str, Any]) -> None:
    for deployment_name, (image_name, _) in DEPLOYMENTS.items():
        (container,) = chart["deployments"][deployment_name]["spec"]["template"]["spec"][
            "containers"
        ]
        assert container["image"].split(":")[0].endswith(f"sfmlops-{image_name}")


def test_containers_conf_keeps_rlimits_within_the_hard_limits() -> None:
    conf = (ROOT / "images" / "podman" / "containers.conf").read_text()
    assert 'runtime = "runc"' in conf
    for name, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, hard = map(int, re.search(rf'"{name}=(\d+):(\d+)"', conf).groups())  # type: ignore[union-attr]
        assert soft <= hard
        _, host_hard = resource.getrlimit(limit)
        assert host_hard == resource.RLIM_INFINITY or hard <= host_hard
