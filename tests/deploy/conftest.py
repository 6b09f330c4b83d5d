"""Fixtures of the deployment tests: the chart rendered per scenario (helpers: tests/support/deploy.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.database_roles import Server, roles_server
from tests.support.deploy import SCENARIOS, Rendered, render


@pytest.fixture(scope="session")
def rendered_all() -> dict[str, Rendered]:
    """Every scenario rendered once per test session."""
    return {name: render(name) for name in SCENARIOS}


@pytest.fixture(params=sorted(SCENARIOS))
def rendered(request: pytest.FixtureRequest, rendered_all: dict[str, Rendered]) -> Rendered:
    """Each scenario in turn."""
    return rendered_all[str(request.param)]


@pytest.fixture
def server(postgres_url: str) -> Iterator[Server]:
    """The session's PostgreSQL with a migrated sales database, for the database-roles script."""
    with roles_server(postgres_url) as made:
        yield made
