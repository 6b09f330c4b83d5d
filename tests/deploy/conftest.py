"""Fixtures of the deployment tests: the chart rendered per scenario (helpers: tests/support/deploy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.deploy import SCENARIOS, Rendered, render


@pytest.fixture(scope="session")
def rendered_all() -> dict[str, Rendered]:
    """Every scenario rendered once per test session."""
    return {name: render(name) for name in SCENARIOS}


@pytest.fixture(params=sorted(SCENARIOS))
def rendered(request: pytest.FixtureRequest, rendered_all: dict[str, Rendered]) -> Rendered:
    """Each scenario in turn."""
    return rendered_all[str(request.param)]


@pytest.fixture(scope="session")
def written(
    rendered_all: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Each scenario's manifests written to its own folder (for file-based scanners)."""
    folders = {}
    for name, scenario in rendered_all.items():
        folder = tmp_path_factory.mktemp(f"rendered-{name}")
        (folder / "manifests.yaml").write_text(scenario.text)
        folders[name] = folder
    return folders
