"""Every image under images/: pinned base, non-root user, COPY sources that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.conftest import CHART, ROOT, load_yaml

DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile"))
# The images the chart runs by default (producer and stream images come with their services).
CHART_IMAGES = {"forecast-api": "api", "web-ui": "dashboard", "training": "ray", "mlflow": "mlflow"}


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


def test_the_chart_images_have_dockerfiles() -> None:
    assert {path.parent.name for path in DOCKERFILES} >= CHART_IMAGES.keys()
    values = load_yaml(CHART / "values.yaml")
    for folder, component in CHART_IMAGES.items():
        # The workflow pushes images/<folder> as sfmlops-<folder>.
        assert values[component]["image"]["repository"] == f"sfmlops-{folder}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_pinned(path: Path) -> None:
    stages = set()
    for keyword, args in instructions(path):
        if keyword != "FROM":
            continue
        image, *alias = args.split()
        if alias:
            stages.add(alias[-1])
        if image in stages:
            continue
        assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+", image), (
            f"{image}: pin an exact version"
        )
        assert not image.endswith(":latest")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_final_stage_runs_as_non_root(path: Path) -> None:
    steps = instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    users = [args for keyword, args in steps[last_from:] if keyword == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    # A numeric UID lets Kubernetes verify runAsNonRoot; the chart runs pods as 10001.
    assert user.isdigit()
    assert int(user) >= 10000


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
