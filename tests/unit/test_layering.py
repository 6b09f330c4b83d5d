"""The layering contracts (pyproject.toml, run by `make lint`) catch a forbidden import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sfmlops

PACKAGE = Path(sfmlops.__file__).parent
PYPROJECT = PACKAGE.parents[1] / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_copy(
    tmp_path: Path, add_import: tuple[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on a copy of the package, with one import line added to one module."""
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    copy = tmp_path / "src" / "sfmlops"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.csv*"))
    if add_import is not None:
        module, line = add_import
        path = copy / module
        path.write_text(
            path.read_text().replace(
                "from __future__ import annotations\n",
                f"from __future__ import annotations\n\n{line}\n",
                1,
            )
        )
    # The copy comes first on the path, ahead of the installed (editable) package.
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_package_keeps_its_layers(tmp_path: Path) -> None:
    result = lint_copy(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        (
            "core/columns.py",
            "from sfmlops.adapters.db.store_records import list_stores",
            "sfmlops.core.columns -> sfmlops.adapters.db.store_records",
        ),
        (
            "core/validation.py",
            "import sqlalchemy",
            "sfmlops.core is not allowed to import sqlalchemy",
        ),
        (
            "services/loading.py",
            "from sfmlops.cli import context",
            "sfmlops.services.loading -> sfmlops.cli.context",
        ),
        (
            "ui/charts.py",
            "from sfmlops.services import loading",
            "sfmlops.ui is not allowed to import sfmlops.services",
        ),
    ],
)
def test_a_forbidden_import_fails_the_lint(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    result = lint_copy(tmp_path, (module, line))

    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert broken in result.stdout
