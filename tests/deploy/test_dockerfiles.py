"""The images: scripts/images.sh lists them all, each target builds from a pinned base, runs as
a non-root user, copies only what exists, and the sfmlops images share one Python and one lock."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.support.deploy import CHART, ROOT, load_yaml, run, tool

SERVICES_DOCKERFILE = ROOT / "images" / "sfmlops" / "Dockerfile"
HEALTHCHECK = ROOT / "images" / "sfmlops" / "healthcheck.py"
HADOLINT_CONFIG = ROOT / "images" / "hadolint.yaml"
# Chart component of each image the chart runs (the workflow pushes sfmlops-<image name>).
CHART_IMAGES = {
    "forecast-api": "api",
    "web-ui": "dashboard",
    "training": "ray",
    "mlflow": "mlflow",
    "stream-processor": "stream",
    "data-producer": "producer",
}


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: Path
    target: str | None  # None: the file's last stage


@dataclass(frozen=True)
class Stage:
    name: str
    base: str  # with build arguments replaced by their defaults
    written_base: str  # as the FROM line writes it
    steps: list[tuple[str, str]]


def images() -> list[Image]:
    """The images scripts/images.sh lists (the Makefile and the workflow build these)."""
    result = []
    for line in run(["scripts/images.sh", "list"]).stdout.splitlines():
        name, dockerfile, target = line.split("\t")
        result.append(Image(name, ROOT / dockerfile, None if target == "-" else target))
    return result


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def global_args(path: Path) -> dict[str, str]:
    """The build arguments declared before the first FROM, with their defaults ("" if none)."""
    result = {}
    for keyword, args in instructions(path):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = args.partition("=")
            result[name] = default
    return result


def stages(path: Path) -> list[Stage]:
    """The build stages of a Dockerfile in order (an unnamed stage is named by its index)."""
    defaults = global_args(path)
    result: list[Stage] = []
    for keyword, args in instructions(path):
        if keyword == "FROM":
            written, *alias = args.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m[1] or m[2]], written)
            result.append(Stage(alias[-1] if alias else str(len(result)), base, written, []))
        elif result:
            result[-1].steps.append((keyword, args))
    return result


def chain(path: Path, target: str | None) -> list[Stage]:
    """The stages an image is made of, from its target up to the external base."""
    by_name = {stage.name: stage for stage in stages(path)}
    stage = by_name[target] if target else stages(path)[-1]
    lineage = [stage]
    while stage.base in by_name:
        stage = by_name[stage.base]
        lineage.append(stage)
    return lineage


def effective(path: Path, target: str | None, keyword: str) -> str | None:
    """The last `keyword` instruction in force for a target (inherited from its parents)."""
    for stage in chain(path, target):
        found = [args for step, args in stage.steps if step == keyword]
        if found:
            return found[-1]
    return None


IMAGES = images()
DOCKERFILES = sorted({image.dockerfile for image in IMAGES})


def test_every_dockerfile_is_listed_and_every_target_exists() -> None:
    assert set(DOCKERFILES) == set((ROOT / "images").glob("*/Dockerfile"))
    names = [image.name for image in IMAGES]
    assert len(names) == len(set(names))
    for image in IMAGES:
        if image.target:
            assert image.target in {stage.name for stage in stages(image.dockerfile)}, image


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_stage_is_an_image_or_feeds_one(path: Path) -> None:
    targets = {image.target for image in IMAGES if image.dockerfile == path}
    all_stages = stages(path)
    used = {stage.base for stage in all_stages}
    used |= {
        match
        for stage in all_stages
        for step, args in stage.steps
        if step == "COPY"
        for match in re.findall(r"--from=(\S+)", args)
    }
    unused = [
        stage.name
        for stage in all_stages[:-1]  # the last stage is what a build without --target makes
        if stage.name not in targets and stage.name not in used
    ]
    assert not unused, f"{path}: stages nothing builds: {unused}"


def test_the_chart_runs_the_listed_images() -> None:
    values = load_yaml(CHART / "values.yaml")
    names = {image.name for image in IMAGES}
    # Every image but Airflow's (its own release) is run by the chart.
    assert set(CHART_IMAGES) == names - {"airflow"}
    for name, component in CHART_IMAGES.items():
        assert values[component]["image"]["repository"] == f"sfmlops-{name}"


def test_hadolint_exceptions_are_documented() -> None:
    # hadolint itself runs in `make lint-deploy` (scripts/lint-deploy.sh) on every Dockerfile.
    accepted = [
        line.strip()[2:].partition("#")
        for line in HADOLINT_CONFIG.read_text().splitlines()
        if line.strip().startswith("- ")
    ]
    assert accepted
    for rule, _, reason in accepted:
        assert re.fullmatch(r"DL\d{4}", rule.strip()), rule
        assert len(reason.split()) >= 8, f"{rule}: give the reason"
    for path in DOCKERFILES:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.startswith("# hadolint ignore="):
                reason = lines[number - 1]
                assert reason.startswith("#"), f"{path}:{number + 1}: give the reason above"
                assert len(reason.split()) >= 8, f"{path}:{number + 1}: give the reason above"


def test_hadolint_would_catch_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN cd /tmp && pip install requests\nUSER root\n")
    result = run(
        [tool("hadolint"), "--no-color", "--config", str(HADOLINT_CONFIG), str(careless)],
        check=False,
    )
    assert result.returncode != 0
    for rule in ("DL3007", "DL3003", "DL3013", "DL3002"):  # latest, cd, unpinned pip, root
        assert rule in result.stdout


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_pinned_build_arguments(path: Path) -> None:
    # Each public base is a build argument (a machine without a registry passes a local
    # stand-in, scripts/base-images.sh) whose default, the image users get, is pinned.
    names = {stage.name for stage in stages(path)}
    external = [stage for stage in stages(path) if stage.base not in names]
    assert external
    defaults = global_args(path)
    for stage in external:
        argument = re.fullmatch(r"\$\{(\w+)\}", stage.written_base)
        assert argument, f"{path}: FROM {stage.written_base}: make the base a build argument"
        image = defaults[argument[1]]
        assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+", image), (
            f"{argument[1]}={image}: pin an exact version"
        )
        assert not image.endswith(":latest")


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_every_image_runs_as_non_root(image: Image) -> None:
    user = effective(image.dockerfile, image.target, "USER")
    assert user, "no USER in force"
    uid = user.split(":")[0]
    # A numeric UID lets Kubernetes verify runAsNonRoot.
    assert uid.isdigit()
    assert int(uid) >= 10000


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_copy_sources_exist_in_the_build_context(path: Path) -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for keyword, args in instructions(path):
        if keyword not in {"COPY", "ADD"} or "--from=" in args:
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"{path}: COPY {source} not in the repository"
            assert source.rstrip("/") not in ignored, f"{source} is excluded by .dockerignore"


def test_sfmlops_images_share_one_python_and_one_locked_environment() -> None:
    # The Ray nodes (training) and their clients (the API, the Airflow task pods) must run the
    # same Python and Ray: every sfmlops image installs the lock's versions (-c constraints.txt)
    # with the extras of its process (pyproject.toml) and nothing else; MLflow's image copies
    # its own venv.
    extras = {
        "forecast-api": ["ray"],
        "web-ui": ["ui"],
        "data-producer": [],
        "training": ["all"],
        "stream-processor": ["all"],
    }
    for image in IMAGES:
        if image.dockerfile != SERVICES_DOCKERFILE:
            continue
        lineage = chain(image.dockerfile, image.target)
        assert lineage[-1].name == "base", image.name
        runs = [args for stage in lineage for step, args in stage.steps if step == "RUN"]
        copies = [args for stage in lineage for step, args in stage.steps if step == "COPY"]
        if image.name == "mlflow":
            assert any("--from=mlflow-venv /opt/venv" in args for args in copies)
            continue
        installed = [
            match[1].split()
            for args in runs
            if (match := re.search(r"requirements\.py pyproject\.toml([\w ]*)>", args))
        ]
        assert installed == [extras[image.name]], image.name
        assert all(
            "pip install -c constraints.txt -r requirements.txt" in args
            for args in runs
            if "requirements.py" in args
        ), image.name
        assert any("pip install --no-deps ." in args for args in runs), image.name
    base = stages(SERVICES_DOCKERFILE)[0].base
    python = re.search(r"python:(\d+\.\d+)\.\d+", base)
    assert python is not None
    # The lock is compiled for that Python (Makefile `lock`), and the tests ran on it.
    assert f"--python-version {python[1]}" in (ROOT / "Makefile").read_text()
    assert python[1] == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_the_raycluster_declares_the_locked_ray_version() -> None:
    locked = re.search(r"^ray==(\S+)", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert locked is not None
    assert load_yaml(CHART / "values.yaml")["ray"]["rayVersion"] == locked[1]
    assert load_yaml(ROOT / "values-ray.yaml")["ray"]["rayVersion"] == locked[1]


# The URL each server image checks, against the path the chart probes.
SERVER_CHECKS = {
    "forecast-api": ("4242", "/health"),
    "web-ui": ("8000", "/_stcore/health"),
    "mlflow": ("5050", "/health"),
}


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_servers_have_a_healthcheck_on_their_port(image: Image) -> None:
    healthcheck = effective(image.dockerfile, image.target, "HEALTHCHECK")
    exposed = (effective(image.dockerfile, image.target, "EXPOSE") or "").split()
    if image.name not in SERVER_CHECKS:
        # Batch jobs and Ray nodes (KubeRay probes those itself) say so explicitly.
        if image.dockerfile == SERVICES_DOCKERFILE:
            assert healthcheck == "NONE", image.name
        return
    port, path = SERVER_CHECKS[image.name]
    assert port in exposed
    assert healthcheck is not None
    assert "/opt/sfmlops/healthcheck.py" in healthcheck
    assert re.search(rf"http://localhost:{port}\S*{re.escape(path)}", healthcheck), healthcheck


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _check(url: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(HEALTHCHECK), url]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def test_the_healthcheck_passes_on_2xx_only(local_server: str) -> None:
    assert _check(f"{local_server}/health").returncode == 0
    failed = _check(f"{local_server}/ready")
    assert failed.returncode == 1
    assert "503" in failed.stderr


def test_the_healthcheck_fails_when_nothing_listens() -> None:
    # A port just freed by a server that stopped: nothing listens there.
    server = HTTPServer(("127.0.0.1", 0), _Answer)
    port = server.server_address[1]
    server.server_close()
    failed = _check(f"http://127.0.0.1:{port}/health")
    assert failed.returncode == 1
    assert failed.stderr


def test_the_airflow_image_is_the_locked_airflow() -> None:
    """The Airflow image installs under requirements-airflow.txt, and its base is the official
    image of the lock's Airflow version: what runs in the cluster is what the DAG tests ran on."""
    dockerfile = (ROOT / "images" / "airflow" / "Dockerfile").read_text()
    lock = (ROOT / "requirements-airflow.txt").read_text()
    locked = re.search(r"^apache-airflow==(\S+)", lock, re.MULTILINE)
    base = re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:(\d[^-\s]*)-python", dockerfile, re.M)
    assert locked, "no apache-airflow pin in requirements-airflow.txt"
    assert base, "no official apache/airflow base in images/airflow/Dockerfile"
    assert base.group(1) == locked.group(1)
    assert "COPY requirements-airflow.txt" in dockerfile
    assert "--constraint /tmp/requirements-airflow.txt" in dockerfile
