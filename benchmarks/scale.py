"""Scale benchmark: cost against series count, 1k / 10k / 100k series side by side.

Not part of `make test`. Run from the repository root:

    python benchmarks/scale.py --quick          # 1k and 10k series (about 10 minutes idle)
    python benchmarks/scale.py                  # 1k, 10k and 100k series (hours on 2 cores)
        [--sizes 1000,10000,100000] [--days 365] [--models gbm] [--executor auto]
        [--database-url postgresql+psycopg2://...] [--output benchmarks/results/scale.json]

Each size is a synthetic dataset (`sfmlops synth`: 100 stores x 10 products for 1k, 1,000 x 10
for 10k, 1,115 x 90 for 100k; one year of history) run end to end as a user runs it, every
step a real `sfmlops` process on its own `SFMLOPS_HOME` (SQLite and embedded MLflow unless
`--database-url` names an empty PostgreSQL database per size with `{size}` in it):

    synth -> load-data -> train -> pipeline forecast -> serve (start-up, RSS, GET p99)

GET latency is measured twice, 400 sequential requests each: the default horizon of a
product, then any start and length within the calibrated horizon (a product or the store's
total across products, alternately).

For each step: wall time and the peak RSS of the process tree (sampled every 0.5 s); the
database size after loading. Then the growth exponent of each step between consecutive
sizes (log cost ratio / log series ratio: 1.0 is linear). The last line printed is
`training growth exponent X.XX` from the two smallest sizes (training job wall time, the
command's start-up excluded by subtracting `sfmlops train --help`'s time).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

SFMLOPS = str(Path(sys.executable).with_name("sfmlops"))
TOKEN = "scale-benchmark-token-not-a-secret-0123"
# Series count -> (stores, products): 100k is every bundled store with 90 products.
SHAPES = {1_000: (100, 10), 10_000: (1_000, 10), 100_000: (1_115, 90)}
GET_REQUESTS = 400


@dataclass
class Step:
    seconds: float
    peak_rss_mib: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k series only")
    parser.add_argument(
        "--sizes", default="1000,10000,100000", help="series counts (1000, 10000, 100000)"
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--models", default="gbm", help="models trained (sfmlops train --models)")
    parser.add_argument(
        "--windows", type=int, default=1, help="backtest windows of the training job"
    )
    parser.add_argument("--executor", default="auto", help="sfmlops train --executor")
    parser.add_argument(
        "--database-url", default=None, help="with {size}: one empty database per size"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working folders")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/scale.json"))
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [int(size) for size in args.sizes.split(",")]
    unknown = [size for size in sizes if size not in SHAPES]
    if unknown:
        parser.error(f"--sizes: {unknown} not in {sorted(SHAPES)}")

    results: dict[str, Any] = {
        "machine": machine(),
        "arguments": vars(args) | {"output": str(args.output)},
    }
    results["command_start_seconds"] = command_start_seconds()
    rows = []
    for size in sizes:
        log(f"{size:,} series: start (load average {load_average()})")
        work = Path(tempfile.mkdtemp(prefix=f"sfmlops-scale-{size}-"))
        try:
            rows.append(run_size(size, work, args) | {"load_average_after": load_average()})
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        log(json.dumps(rows[-1]))
        results["sizes"] = rows
        save(results, args.output)
    results["growth_exponents"] = growth_exponents(rows, results["command_start_seconds"])
    save(results, args.output)
    print(table(rows, results["growth_exponents"]))
    first, second = rows[0], rows[1] if len(rows) > 1 else rows[0]
    exponent = exponent_of(
        first["series"], first["train_s"] - results["command_start_seconds"],
        second["series"], second["train_s"] - results["command_start_seconds"],
    )  # fmt: skip
    print(f"training growth exponent {exponent:.2f}")


def run_size(size: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    stores, products = SHAPES[size]
    home = work / "home"
    data = work / "data"
    env = environment(home, args.database_url.format(size=size) if args.database_url else None)
    synth = timed(
        [SFMLOPS, "synth", "--stores", str(stores), "--products", str(products),
         "--days", str(args.days), "--out", str(data)],
        env,
    )  # fmt: skip
    load = timed([SFMLOPS, "load-data", "--path", str(data)], env)
    train = timed(
        [SFMLOPS, "train", "--models", args.models, "--windows", str(args.windows),
         "--executor", args.executor],
        env,
    )  # fmt: skip
    forecast = timed([SFMLOPS, "pipeline", "forecast"], env)
    serving = serve(env, work, stores)
    database = home / "sfmlops.db"
    return {
        "series": stores * products,
        "stores": stores,
        "products": products,
        "days": args.days,
        "sales_mib": round((data / "train.csv.gz").stat().st_size / 2**20, 1),
        "synth_s": synth.seconds,
        "load_s": load.seconds,
        "load_peak_rss_mib": load.peak_rss_mib,
        "database_mib": round(database.stat().st_size / 2**20, 1) if database.exists() else None,
        "train_s": train.seconds,
        "train_peak_rss_mib": train.peak_rss_mib,
        "forecast_s": forecast.seconds,
        "forecast_peak_rss_mib": forecast.peak_rss_mib,
        **serving,
    }


def serve(env: dict[str, str], work: Path, stores: int) -> dict[str, Any]:
    """Start the API, time it until ready, then its RSS and single-series GET latency."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with (work / "serve.log").open("w") as out:
        server = subprocess.Popen(
            [SFMLOPS, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            while True:
                if server.poll() is not None:
                    raise RuntimeError(
                        f"the API exited: {(work / 'serve.log').read_text()[-2000:]}"
                    )
                try:
                    if client.get("/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            start_s = time.perf_counter() - started
            rss = tree_rss_mib(server.pid)
            latencies = []
            for request in range(GET_REQUESTS):
                store_id = 1 + (request * 7919) % stores
                sent = time.perf_counter()
                response = client.get(
                    f"/v1/stores/{store_id}/forecast", params={"product_id": "P001"}
                )
                latencies.append((time.perf_counter() - sent) * 1000)
                response.raise_for_status()
            # Any start and length within the calibrated horizon, of a product or the
            # store's total across products.
            first = dt.date.fromisoformat(response.json()["start"])
            last = dt.date.fromisoformat(response.json()["calibrated_until"])
            horizon_days = (last - first).days + 1
            any_latencies = []
            for request in range(GET_REQUESTS):
                store_id = 1 + (request * 7919) % stores
                offset = (request * 13) % horizon_days
                params = {
                    "product_id": "total" if request % 2 else "P002",
                    "start": (first + dt.timedelta(days=offset)).isoformat(),
                    "days": str(1 + (request * 7) % (horizon_days - offset)),
                }
                sent = time.perf_counter()
                response = client.get(f"/v1/stores/{store_id}/forecast", params=params)
                any_latencies.append((time.perf_counter() - sent) * 1000)
                response.raise_for_status()
    finally:
        server.terminate()
        server.wait(timeout=60)
    latencies.sort()
    any_latencies.sort()
    return {
        "api_start_s": round(start_s, 1),
        "api_rss_mib": round(rss),
        "get_p50_ms": round(statistics.median(latencies), 1),
        "get_p99_ms": round(latencies[int(0.99 * len(latencies)) - 1], 1),
        "get_any_p50_ms": round(statistics.median(any_latencies), 1),
        "get_any_p99_ms": round(any_latencies[int(0.99 * len(any_latencies)) - 1], 1),
    }


def timed(command: list[str], env: dict[str, str]) -> Step:
    """Run `command` to completion; its wall time and the peak RSS of its process tree."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = [0.0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss_mib(process.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    sampler.join()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[1:])} failed ({process.returncode}):\n{output[-4000:]}"
        )
    log(f"  {' '.join(command[1:3])}: {seconds:.1f} s, peak RSS {peak[0]:.0f} MiB")
    return Step(round(seconds, 1), round(peak[0]))


def tree_rss_mib(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total / 2**20


def command_start_seconds() -> float:
    """What starting `sfmlops` costs before it does anything (imports): the median of 3."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([SFMLOPS, "train", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 2)


def exponent_of(series_a: int, cost_a: float, series_b: int, cost_b: float) -> float:
    if series_a == series_b or cost_a <= 0 or cost_b <= 0:
        return float("nan")
    return math.log(cost_b / cost_a) / math.log(series_b / series_a)


def growth_exponents(rows: list[dict[str, Any]], start_s: float) -> list[dict[str, Any]]:
    steps = [
        "synth_s",
        "load_s",
        "database_mib",
        "train_s",
        "train_peak_rss_mib",
        "forecast_s",
        "api_start_s",
        "api_rss_mib",
        "get_p99_ms",
        "get_any_p99_ms",
    ]
    exponents = []
    for low, high in itertools.pairwise(rows):
        exponents.append(
            {"from": low["series"], "to": high["series"]}
            | {
                step: round(
                    exponent_of(
                        low["series"], (low[step] or 0) - (start_s if step == "train_s" else 0),
                        high["series"], (high[step] or 0) - (start_s if step == "train_s" else 0),
                    ),
                    2,
                )
                for step in steps
            }
        )  # fmt: skip
    return exponents


def table(rows: list[dict[str, Any]], exponents: list[dict[str, Any]]) -> str:
    keys = [key for key in rows[0] if key not in ("stores", "products", "days")]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += [
        "| "
        + " | ".join(
            f"{row[key]:,}" if isinstance(row[key], int) else str(row[key]) for key in keys
        )
        + " |"
        for row in rows
    ]
    for exponent in exponents:
        lines.append(
            f"growth exponents {exponent['from']:,} -> {exponent['to']:,}: "
            + ", ".join(f"{k} {v}" for k, v in exponent.items() if k not in ("from", "to"))
        )
    return "\n".join(lines)


def environment(home: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFMLOPS_")}
    env |= {
        "SFMLOPS_HOME": str(home),
        "SFMLOPS_API_TOKEN": TOKEN,
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    if database_url:
        env["SFMLOPS_DATABASE_URL"] = database_url
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def save(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
