"""Peak memory and time of reading a whole sales history into the training frame.

`read_sales` (chunks of `READ_CHUNK_ROWS` rows made into frames as they arrive) side by side
with the baseline, the same query fetched at once into one frame (what `read_sales` did
before). Each way runs in a fresh process, so its peak RSS is its own.

    python benchmarks/read_sales.py --database-url sqlite:////path/to/sfmlops.db
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(way: str, database_url: str) -> dict[str, float]:
    import pandas as pd  # noqa: PLC0415
    from sqlalchemy import select  # noqa: PLC0415

    from sfmlops.adapters.db import sales_records  # noqa: PLC0415
    from sfmlops.adapters.db.engine import make_engine  # noqa: PLC0415
    from sfmlops.adapters.db.tables import sales  # noqa: PLC0415
    from sfmlops.core import columns  # noqa: PLC0415

    engine = make_engine(database_url)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with engine.connect() as connection:
        if way == "chunks":
            frame = sales_records.read_sales(connection)
        else:
            query = select(*[sales.c[name] for name in columns.SALES_COLUMNS]).order_by(
                sales.c.store_id, sales.c.product_id, sales.c.sales_date
            )
            frame = pd.DataFrame(
                connection.execute(query).fetchall(), columns=list(columns.SALES_COLUMNS)
            )
            frame[columns.SALES_DATE] = pd.to_datetime(frame[columns.SALES_DATE])
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rows": len(frame),
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak / 1024),
        "start_rss_mib": round(before / 1024),
        "frame_mib": round(frame.memory_usage(deep=True).sum() / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--way", choices=["chunks", "at-once"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:
        print(json.dumps(measure(args.way, args.database_url)))
        return
    print("| way | rows | seconds | peak RSS MiB | frame MiB |")
    print("|---|---:|---:|---:|---:|")
    for way in ("at-once", "chunks"):
        out = subprocess.run(
            [sys.executable, __file__, "--database-url", args.database_url, "--way", way],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(
            f"| {way} | {result['rows']:,} | {result['seconds']} | "
            f"{result['peak_rss_mib']:,} | {result['frame_mib']:,} |"
        )


if __name__ == "__main__":
    main()
