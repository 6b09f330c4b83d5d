"""`make dev` in fresh clones of two revisions: wall time and growth of uv's cache.

Not part of `make test`. Run from the repository root:

    python benchmarks/fresh_clone_install.py --revisions REV,REV [--rounds 2]
        [--stale pyspark] [--output benchmarks/results/fresh_clone_install.json]

Each round clones this repository into a temporary folder per revision, in turn, and times
`make dev` there (a new venv; every cache under ~/.cache kept). `--stale PACKAGE` sets
UV_REFRESH_PACKAGE so uv revalidates that package's cached download, as it does once the cached
response has gone stale (hours after the last install: every CI run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from forecast_backtest import (
    alternated,
    print_table,
    save,
)  # the benchmarks' shared output helpers
from scale import machine  # the machine's description, as the scale benchmark records it

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", required=True, help="two or more, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stale", default="", help="a package uv must revalidate")
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/fresh_clone_install.json")
    )
    args = parser.parse_args()
    cache = uv_cache()
    runs = alternated(
        args.rounds,
        args.revisions.split(","),
        lambda revision: install(revision, args.stale, cache),
    )
    print_table(
        ["revision", "`make dev` wall (s)", "uv cache growth (MiB)", "load"],
        (
            [
                run["revision"],
                run["seconds"],
                f"{run['uv_cache_growth_mib']:+,}",
                run["load_before"],
            ]
            for run in runs
        ),
    )
    save({"machine": machine(), "stale": args.stale, "runs": runs}, args.output)


def uv_cache() -> Path:
    return Path(os.environ.get("UV_CACHE_DIR", Path.home() / ".cache" / "uv"))


def size_mib(folder: Path) -> int:
    if not folder.exists():
        return 0
    out = subprocess.run(["du", "-sm", str(folder)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def install(revision: str, stale: str, cache: Path) -> dict[str, Any]:
    """Clone `revision` and time `make dev` in the clone."""
    clone = Path(tempfile.mkdtemp(prefix="fresh-clone-"))
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", revision], check=True)
        env = os.environ | ({"UV_REFRESH_PACKAGE": stale} if stale else {})
        before = size_mib(cache)
        load = round(os.getloadavg()[0], 1)
        started = time.perf_counter()
        subprocess.run(["make", "dev"], cwd=clone, env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        return {
            "revision": revision,
            "seconds": round(seconds, 1),
            "uv_cache_growth_mib": size_mib(cache) - before,
            "load_before": load,
        }
    finally:
        shutil.rmtree(clone, ignore_errors=True)


if __name__ == "__main__":
    main()
