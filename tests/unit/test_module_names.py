"""Module names: one module per name across the package, so a name says which file is meant."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import sfmlops

PACKAGE = Path(sfmlops.__file__).parent
NOT_NAMES = {"__init__", "__main__"}


def module_stems(package: Path) -> dict[str, list[str]]:
    """Every module and subpackage name under `package`, with the paths that carry it."""
    found: defaultdict[str, list[str]] = defaultdict(list)
    for path in sorted(package.rglob("*.py")):
        if path.stem not in NOT_NAMES:
            found[path.stem].append(str(path.relative_to(package)))
    for init in sorted(package.rglob("__init__.py")):
        if init.parent != package:
            found[init.parent.name].append(f"{init.parent.relative_to(package)}/")
    return found


def test_no_two_modules_share_a_name() -> None:
    shared = {stem: paths for stem, paths in module_stems(PACKAGE).items() if len(paths) > 1}

    assert not shared, f"modules sharing a name (rename one after its layer's job): {shared}"


def test_the_check_sees_a_shared_name(tmp_path: Path) -> None:
    for layer in ("cli", "services"):
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").touch()
        (tmp_path / layer / "training.py").touch()

    assert module_stems(tmp_path)["training"] == ["cli/training.py", "services/training.py"]
