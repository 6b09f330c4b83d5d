"""Print the requirements of the sfmlops package with some of its extras, one per line.

Usage: python requirements.py PYPROJECT [EXTRA...]

The images install these first (a layer that changes only with pyproject.toml and the lock),
then the package itself without dependencies, so a change to the sources rebuilds only that.
Extras that name other extras of the package (`all = ["sfmlops[spark,ray]"]`) are expanded.
"""

import re
import sys
import tomllib


def requirements(project: dict, extras: list[str]) -> list[str]:
    optional = project.get("optional-dependencies", {})
    result = list(project["dependencies"])
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"{extra!r} is not an extra of {project['name']}")
        seen.add(extra)
        for requirement in optional[extra]:
            own = re.fullmatch(rf"{project['name']}\[([\w,\s-]+)\]", requirement)
            if own:
                pending += [name.strip() for name in own[1].split(",")]
            else:
                result.append(requirement)
    return result


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as file:
        pyproject = tomllib.load(file)
    print("\n".join(requirements(pyproject["project"], sys.argv[2:])))
