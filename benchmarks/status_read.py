"""GET /v1/status's sales figures on PostgreSQL: the kept row, side by side with the scan.

A throwaway PostgreSQL cluster (scripts/postgres.sh) gets the bundled data (`sfmlops
load-data`, 963,689 rows of 1,115 series), then `--products` - 1 more copies of it under other
product ids, written server-side (INSERT ... SELECT; the kept figures are then recounted once),
so the table has the row count of a larger catalogue; every row dated as ingested 30 days
ago. Then, alternately, `--repeats` times
each: the figures as GET /v1/status reads them now (`sales_rows_and_latest_date`: one row of
`sales_extent`) and as it read them before (`count(*)` and `max(sales_date)` over `sales`),
checked equal; and the API's own GET /v1/status in process.

    PYTHONPATH=src .venv/bin/python benchmarks/status_read.py --products 33
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SFMLOPS = str(Path(sys.executable).with_name("sfmlops"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed(call: Any, repeats: int) -> tuple[list[float], Any]:
    seconds = []
    result = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        seconds.append((time.perf_counter() - started) * 1000)
    return seconds, result


def figures(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(ms), 2), "max_ms": round(max(ms), 2)}


def measure(url: str, products: int, repeats: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient  # noqa: PLC0415
    from sqlalchemy import func, select, text  # noqa: PLC0415

    from sfmlops.adapters.db import sales_records  # noqa: PLC0415
    from sfmlops.adapters.db.engine import make_engine  # noqa: PLC0415
    from sfmlops.adapters.db.tables import sales  # noqa: PLC0415
    from sfmlops.services.api import create_app  # noqa: PLC0415
    from sfmlops.settings import Settings  # noqa: PLC0415

    engine = make_engine(url)
    started = time.perf_counter()
    with engine.begin() as connection:
        # As if loaded a month ago: GET /v1/status also counts the rows ingested in the last
        # day, which in steady state are one day's sales, not the whole table.
        connection.execute(text("UPDATE sales SET ingested_at = ingested_at - interval '30 days'"))
        for copy in range(2, products + 1):
            connection.execute(
                text(
                    "INSERT INTO sales SELECT store_id, :product, sales_date, sales, customers,"
                    " open, promo, state_holiday, school_holiday, ingested_at FROM sales"
                    " WHERE product_id = 'total'"
                ),
                {"product": f"P{copy:03d}"},
            )
        # Written around upsert_sales: recount the kept figures once.
        connection.execute(
            text(
                "UPDATE sales_extent SET sales_rows = (SELECT count(*) FROM sales),"
                " latest_sales_date = (SELECT max(sales_date) FROM sales)"
            )
        )
    copied = time.perf_counter() - started
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM ANALYZE sales")
        )
        size = connection.execute(text("SELECT pg_total_relation_size('sales')")).scalar_one()

    def kept() -> tuple[int, Any]:
        with engine.connect() as connection:
            return sales_records.sales_rows_and_latest_date(connection)

    def scanned() -> tuple[int, Any]:
        with engine.connect() as connection:
            rows, latest = connection.execute(
                select(func.count(), func.max(sales.c.sales_date))
            ).one()
        return int(rows), latest

    kept_ms: list[float] = []
    scanned_ms: list[float] = []
    for _ in range(repeats):
        seconds, now = timed(kept, 1)
        kept_ms += seconds
        seconds, before = timed(scanned, 1)
        scanned_ms += seconds
        if now != before:
            raise RuntimeError(f"kept {now} != scanned {before}")
    settings = Settings(database_url=url, home=Path(tempfile.mkdtemp(prefix="status-home-")))
    with TestClient(create_app(settings)) as client:
        client.get("/v1/status").raise_for_status()
        status_ms, body = timed(lambda: client.get("/v1/status").json(), repeats)
    return {
        "rows": now[0],
        "latest_sales_date": str(now[1]),
        "series": 1115 * products,
        "sales_table_mib": round(size / 2**20),
        "copy_seconds": round(copied, 1),
        "kept_row": figures(kept_ms),
        "count_and_max_scan": figures(scanned_ms),
        "get_v1_status_in_process": figures(status_ms),
        "status_sales_rows": body["sales_rows"],
        "load_average": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=1, help="copies of the bundled series")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    cluster = Path(tempfile.mkdtemp(prefix="sfmlops-status-pg-"))
    cluster.chmod(0o755)  # the cluster runs as "postgres" when run as root
    script = ROOT / "scripts" / "postgres.sh"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFMLOPS_")}
    url = subprocess.run(
        [str(script), "start", str(cluster / "pg"), str(free_port())],
        check=True,
        capture_output=True,
        text=True,
        env=env | {"SFMLOPS_PG_FSYNC": "on"},
    ).stdout.strip()
    try:
        home = cluster / "home"
        load_env = env | {"SFMLOPS_HOME": str(home), "SFMLOPS_DATABASE_URL": url}
        subprocess.run([SFMLOPS, "load-data"], env=load_env, check=True, capture_output=True)
        print(json.dumps(measure(url, args.products, args.repeats), indent=2))
    finally:
        subprocess.run([str(script), "stop", str(cluster / "pg")], check=False, env=env)
        shutil.rmtree(cluster, ignore_errors=True)


if __name__ == "__main__":
    main()
