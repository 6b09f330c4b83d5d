"""The container engine and the images of `make images`, as the container tests use them."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.deploy import ROOT

# podman reads the project's settings (runc, rlimits within the host's hard limits).
ENGINE_ENV = {
    **os.environ,
    "CONTAINERS_CONF": os.environ.get(
        "CONTAINERS_CONF", str(ROOT / "images" / "podman" / "containers.conf")
    ),
}


def engine() -> str:
    """docker or podman, as scripts/images.sh chooses; fails the test when there is neither."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "images.sh"), "engine"],
        capture_output=True,
        text=True,
        check=False,
        env=ENGINE_ENV,
    )
    if result.returncode != 0:
        pytest.fail(f"no container engine: {result.stderr} (make container-tools)")
    return result.stdout.strip()


def image_of(name: str) -> str:
    """The image `make images` builds for NAME from the current sources; fails when missing."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "images.sh"), "tag", name],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=ENGINE_ENV,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/images.sh tag {name}: {result.stderr}")
    image = f"sfmlops-{name}:{result.stdout.strip()}"
    exists = subprocess.run(
        [engine(), "image", "inspect", image], capture_output=True, check=False, env=ENGINE_ENV
    )
    if exists.returncode != 0:
        pytest.fail(f"{image} not built: run `make images`")
    return image
