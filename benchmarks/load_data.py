"""Benchmark: loading the full bundled training file (963,689 rows) into SQLite and PostgreSQL.

Compares `sfmlops load-data`'s path (validate everything, then COPY/executemany upsert in one
transaction) with the reference project's way, pandas `to_sql` with its defaults, in the same run.

    .venv/bin/python benchmarks/load_data.py [--repeat 2]

Starts a throwaway PostgreSQL (Debian's package, fsync on) with scripts/postgres.sh.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services import loading

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def sfmlops_load(engine: Engine) -> None:
    migrate(engine)
    loading.load_folder(engine, ROSSMANN_DIR)


def pandas_to_sql(engine: Engine) -> None:
    frame = pd.read_csv(ROSSMANN_DIR / "train.csv.gz", low_memory=False)
    frame.to_sql("sales_to_sql", engine, if_exists="append", index=False)


def fresh_database(server_url: str, name: str) -> str:
    """A new, empty PostgreSQL database on the benchmark's server."""
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def row_count(engine: Engine, table: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the best is reported")
    args = parser.parse_args()

    parent = Path(tempfile.mkdtemp(prefix="sfmlops-bench-"))
    parent.chmod(0o755)
    cluster = parent / "pg"
    script = ROOT / "scripts" / "postgres.sh"
    env = os.environ | {"SFMLOPS_PG_FSYNC": "on"}
    pg_url = subprocess.run(
        [str(script), "start", str(cluster), str(free_port())],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    results: list[tuple[str, str, float, int]] = []
    try:
        for run in range(args.repeat):
            for backend in ("sqlite", "postgresql"):
                for name, action, table in (
                    ("sfmlops load-data (validate + upsert)", sfmlops_load, "sales"),
                    ("pandas to_sql defaults (reference)", pandas_to_sql, "sales_to_sql"),
                ):
                    case = f"{backend}_{run}_{table}"
                    url = (
                        f"sqlite:///{parent / f'{case}.db'}"
                        if backend == "sqlite"
                        else fresh_database(pg_url, case)
                    )
                    engine = make_engine(url)
                    seconds = timed(lambda: action(engine))  # noqa: B023 - called at once
                    results.append((backend, name, seconds, row_count(engine, table)))
                    engine.dispose()
                    print(f"{backend:10s} {name:40s} {seconds:7.1f} s")
    finally:
        subprocess.run([str(script), "stop", str(cluster)], check=False)

    best: dict[tuple[str, str], tuple[float, int]] = {}
    for backend, name, seconds, rows in results:
        key = (backend, name)
        if key not in best or seconds < best[key][0]:
            best[key] = (seconds, rows)
    print()
    print(
        f"Machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"| backend | method | rows | seconds (best of {args.repeat}) | rows/s |")
    print("|---|---|---:|---:|---:|")
    for (backend, name), (seconds, rows) in best.items():
        print(f"| {backend} | {name} | {rows:,} | {seconds:.1f} | {rows / seconds:,.0f} |")


if __name__ == "__main__":
    main()
