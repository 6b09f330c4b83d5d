"""Tests share helpers through tests/support only, never through conftest.py or test modules."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

TESTS = ROOT / "tests"


def imports_outside_support(path: Path) -> list[str]:
    """The `tests.*` modules `path` imports that are not in the tests/support package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            names = names[:1] if node.module != "tests" else names[1:]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found += [
            name
            for name in names
            if name.split(".")[0] == "tests" and not name.startswith("tests.support")
        ]
    return found


def test_tests_import_shared_helpers_from_tests_support_only() -> None:
    offenders = {
        str(path.relative_to(ROOT)): imported
        for path in sorted(TESTS.rglob("*.py"))
        if "airflow" not in path.parts  # its own environment and rootdir
        and (imported := imports_outside_support(path))
    }

    assert not offenders, f"import these from tests/support instead: {offenders}"


def test_the_dag_tests_share_helpers_through_dag_support_only() -> None:
    # tests/airflow is its own root in Airflow's venv: top-level `conftest` and `test_*`
    # imports are what would reach another module's helpers there.
    offenders = {
        str(path.relative_to(ROOT)): imported
        for path in sorted((TESTS / "airflow").glob("*.py"))
        if (
            imported := [
                name
                for node in ast.walk(ast.parse(path.read_text(), str(path)))
                if isinstance(node, ast.ImportFrom) and node.module
                for name in [node.module]
                if name == "conftest" or name.startswith("test_")
            ]
        )
    }

    assert not offenders, f"import these from tests/airflow/dag_support.py: {offenders}"


def test_the_check_sees_an_import_from_a_conftest(tmp_path: Path) -> None:
    module = tmp_path / "test_x.py"
    module.write_text("from tests.conftest import free_port\nfrom tests.support import ROOT\n")

    assert imports_outside_support(module) == ["tests.conftest"]
