"""Scale benchmark: cost against series count, 1k / 10k / 100k series side by side.

Not part of `make test`. Run from the repository root:

    python benchmarks/scale.py --quick          # 1k and 10k series (about 8 minutes idle)
    python benchmarks/scale.py                  # 1k, 10k and 100k series (hours on 2 cores)
        [--sizes 1000,10000,100000] [--days 365] [--models gbm --windows 1] [--executor auto]
        [--database-url postgresql+psycopg2://...] [--output benchmarks/results/scale.json]
        [--connections 1,2] [--workers 2] [--requests 400] [--post-requests 100]
        [--shard-series 250] [--keep]
    python benchmarks/scale.py --home DIR --connections 1,2 --workers 2   # serve DIR only

The 10k stand-in of the 100k serving shape (1,000 stores x 10 products in 40 gbm shards of
250 series, as 100k series are 42 shards of 2,500; every store's request touches every
shard with a similar number of rows), kept for `--home` runs:

    python benchmarks/scale.py --sizes 10000 --shard-series 250 --keep

Training is the default `sfmlops train` (the default models, gbm and seasonal_naive, on 3
rolling backtest windows and the season window where the history reaches back to it: with one
year of history it does not), as a user trains. `--models` and `--windows` pass a reduced set
instead (`--models gbm --windows 1`: one backtest window of the gbm alone, the figures this
benchmark measured until 2026-12-07); the results name the training command either way.

Each size is a synthetic dataset (`sfmlops synth`: 100 stores x 10 products for 1k, 1,000 x 10
for 10k, 1,115 x 90 for 100k; one year of history) run end to end as a user runs it, every
step a real `sfmlops` process on its own `SFMLOPS_HOME` (SQLite and embedded MLflow unless
`--database-url` names an empty PostgreSQL database per size with `{size}` in it):

    synth -> load-data -> train -> pipeline forecast -> serve (start-up, RSS, GET p99)

Latency is measured per case, at each count of `--connections` in turn (each connection a
thread with its own keep-alive connection, `--requests` requests each; p50, p99 and requests
per second over the case's wall time, the load average before and after):

- GET the default horizon of a product;
- GET any start and length within the calibrated horizon (a product or the store's total
  across products, alternately);
- POST /v1/forecast, one product with the caller's covariates for every day (any start and
  length within the calibrated horizon: always predicted), `--post-requests` each;
- POST /v1/forecast, one product of every store, 7 days, with covariates,
  `--batch-requests` each.

`--home DIR` serves an existing trained SFMLOPS_HOME (its sales, champion and precomputed
forecasts) instead of building one per size: only the serving figures, nothing written but
the server's own files. `--workers N` is `sfmlops serve --workers N`. `--answers DIR` writes
each POST case's first answer there: two revisions' servers (`PYTHONPATH=REVISION/src`) of
the same HOME must answer byte for byte alike (`cmp`). Request bodies are encoded before
the clock starts.

For each step: wall time and the peak RSS of the process tree (sampled every 0.5 s); the
database size after loading. Then the growth exponent of each step between consecutive
sizes (log cost ratio / log series ratio: 1.0 is linear), as a log-log table (each step's
cost and its log10 per series count) and plot (`--output` with `.png`: cost against series
count on log-log axes, one line per step; the slope of a line is the step's exponent).
`--report RESULTS.json` prints the table and draws the plot of a saved run. The last line printed is
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
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

SFMLOPS = str(Path(sys.executable).with_name("sfmlops"))
TOKEN = "scale-benchmark-token-not-a-secret-0123"
# Series count -> (stores, products): 100k is every bundled store with 90 products.
SHAPES = {1_000: (100, 10), 10_000: (1_000, 10), 100_000: (1_115, 90)}
# The covariates a caller gives in a POST: a promotion every other day, school holidays on
# every third, the store open and no state holiday.
COVARIATE_DAY = {"open": 1, "state_holiday": "0"}


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
    parser.add_argument(
        "--models", default=None, help="sfmlops train --models (default: the default models)"
    )
    parser.add_argument(
        "--windows", type=int, default=None, help="sfmlops train --windows (default: 3)"
    )
    parser.add_argument("--executor", default=None, help="sfmlops train --executor (default: auto)")
    parser.add_argument(
        "--shard-series",
        type=int,
        default=None,
        help="sfmlops train --shard-series (most series per gbm booster; default 2,500)",
    )
    parser.add_argument(
        "--database-url", default=None, help="with {size}: one empty database per size"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working folders")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/scale.json"))
    parser.add_argument(
        "--home", type=Path, default=None, help="serve this trained SFMLOPS_HOME only"
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="table and plot of a saved run's results"
    )
    parser.add_argument("--workers", type=int, default=1, help="sfmlops serve --workers")
    parser.add_argument(
        "--connections", default="1", help="concurrent connections, each count in turn: 1,2"
    )
    parser.add_argument("--requests", type=int, default=400, help="GETs per connection")
    parser.add_argument(
        "--post-requests", type=int, default=100, help="one-series POSTs per connection"
    )
    parser.add_argument(
        "--batch-requests", type=int, default=20, help="every-store POSTs per connection"
    )
    parser.add_argument(
        "--answers",
        type=Path,
        default=None,
        help="write each POST case's first answer into this folder (to compare revisions)",
    )
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [int(size) for size in args.sizes.split(",")]
    unknown = [size for size in sizes if size not in SHAPES]
    if unknown:
        parser.error(f"--sizes: {unknown} not in {sorted(SHAPES)}")
    args.connections = [int(count) for count in args.connections.split(",")]

    if args.report is not None:
        saved = json.loads(args.report.read_text())
        print(loglog_table(saved["sizes"], saved["growth_exponents"]))
        print(f"plot: {plot(saved['sizes'], args.report.with_suffix('.png'))}")
        return
    results: dict[str, Any] = {
        "machine": machine(),
        "arguments": vars(args) | {"output": str(args.output)},
    }
    if args.home is not None:
        results["serving"] = serve_home(args.home.absolute(), args)
        save(results, args.output)
        print(latency_table(results["serving"]["latency"]))
        return
    results["command_start_seconds"] = command_start_seconds()
    rows = []
    for size in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"sfmlops-scale-{size}-"))
        log(f"{size:,} series in {work}: start (load average {load_average()})")
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
    print(loglog_table(rows, results["growth_exponents"]))
    print(f"plot: {plot(rows, args.output.with_suffix('.png'))}")
    for row in rows:
        print(f"\n{row['series']:,} series, {args.workers} server worker(s):")
        print(latency_table(row["latency"]))
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
    train = timed(train_command(args), env)
    forecast = timed([SFMLOPS, "pipeline", "forecast"], env)
    serving = serve(env, work, args)
    database = home / "sfmlops.db"
    return {
        "series": stores * products,
        "train_command": " ".join(train_command(args)[1:]),
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


def train_command(args: argparse.Namespace) -> list[str]:
    """`sfmlops train` with only the options given: the default training unless reduced."""
    chosen = {
        "--models": args.models,
        "--windows": args.windows,
        "--executor": args.executor,
        "--shard-series": args.shard_series,
    }
    options = [str(part) for name, value in chosen.items() if value for part in (name, value)]
    return [SFMLOPS, "train", *options]


def serve_home(home: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The serving figures of an existing trained HOME (nothing synthesised or trained)."""
    if not (home / "mlflow.db").is_file():
        raise SystemExit(f"--home {home}: no registry (mlflow.db): train it first")
    work = Path(tempfile.mkdtemp(prefix="sfmlops-scale-serve-"))
    try:
        return {"home": str(home)} | serve(environment(home, None), work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def serve(env: dict[str, str], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Start the API, time it until ready, then its RSS and the latency of each case at each
    connection count. The flat `get_*` figures are those of the first connection count."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    started = time.perf_counter()
    with (work / "serve.log").open("w") as out:
        server = subprocess.Popen(
            [SFMLOPS, "serve", "--port", str(port), "--workers", str(args.workers)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(server, url, work / "serve.log", args.workers)
        start_s = time.perf_counter() - started
        rss = tree_rss_mib(server.pid)
        with httpx.Client(base_url=url, headers=headers) as client:
            stores = client.get("/v1/stores", params={"limit": 1}).json()["total"]
            product_ids = [
                series["product_id"] for series in client.get("/v1/stores/1").json()["series"]
            ]
            products = len(product_ids)
            # The cases' products: P001-P004 of a synthetic home, `total` of the bundled data.
            chosen = [product_ids[k % products] for k in range(4)]
            default = client.get("/v1/stores/1/forecast", params={"product_id": chosen[0]})
            default.raise_for_status()
        first = dt.date.fromisoformat(default.json()["start"])
        last = dt.date.fromisoformat(default.json()["calibrated_until"])
        cases = latency_cases(stores, first, (last - first).days + 1, chosen)
        latency = []
        for case, request_of in cases.items():
            count = (
                args.batch_requests if "every store" in case
                else args.post_requests if case.startswith("POST") else args.requests
            )  # fmt: skip
            for connections in args.connections:
                answers = (
                    args.answers / f"{re.sub(r'[^a-z0-9]+', '-', case.lower())}{connections}.json"
                    if args.answers is not None and case.startswith("POST")
                    else None
                )
                figures = measure(url, headers, request_of, connections, count, answers)
                latency.append({"case": case} | figures)
                log(f"  {case}, {connections} connection(s): {json.dumps(figures)}")
    finally:
        server.terminate()
        server.wait(timeout=60)
    one = {row["case"]: row for row in latency if row["connections"] == args.connections[0]}
    default_get, any_get = (one[case] for case in list(cases)[:2])
    return {
        "api_workers": args.workers,
        "api_start_s": round(start_s, 1),
        "api_rss_mib": round(rss),
        "api_stores": stores,
        "api_products": products,
        "get_p50_ms": default_get["p50_ms"],
        "get_p99_ms": default_get["p99_ms"],
        "get_any_p50_ms": any_get["p50_ms"],
        "get_any_p99_ms": any_get["p99_ms"],
        "latency": latency,
    }


def wait_ready(server: subprocess.Popen[bytes], url: str, log_file: Path, workers: int) -> None:
    """Wait until /ready answers 200 on fresh connections often enough that every worker has
    loaded the champion (the kernel hands each new connection to any worker)."""
    ready_in_a_row = 0
    while ready_in_a_row < 10 * workers:
        if server.poll() is not None:
            raise RuntimeError(f"the API exited: {log_file.read_text()[-2000:]}")
        try:
            ready = httpx.get(f"{url}/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            ready = False
        ready_in_a_row = ready_in_a_row + 1 if ready else 0
        if not ready:
            time.sleep(0.2)


Request = tuple[str, str, dict[str, str] | None, Any]
JSON_BODY = {"Content-Type": "application/json"}


def encoded(request: Request) -> Request:
    """The request with its JSON body as bytes."""
    method, path, query, body = request
    return method, path, query, None if body is None else json.dumps(body).encode()


def latency_cases(
    stores: int, first: dt.date, horizon_days: int, products: list[str]
) -> dict[str, Callable[[int], Request]]:
    """Per case, the n-th request: (method, path, query, JSON body). Stores are spread over
    all of them; starts and lengths over the calibrated horizon; `products`: the four
    products the cases ask for (each store's first four, or `total` four times)."""

    def store_of(n: int) -> int:
        return 1 + (n * 7919) % stores

    def any_span(n: int) -> tuple[dt.date, int]:
        offset = (n * 13) % horizon_days
        return first + dt.timedelta(days=offset), 1 + (n * 7) % (horizon_days - offset)

    def covariates(start: dt.date, days: int, n: int) -> list[dict[str, Any]]:
        return [
            {"date": (start + dt.timedelta(days=day)).isoformat()}
            | COVARIATE_DAY
            | {"promo": (n + day) % 2, "school_holiday": int((n + day) % 3 == 0)}
            for day in range(days)
        ]

    def get_default(n: int) -> Request:
        return "GET", f"/v1/stores/{store_of(n)}/forecast", {"product_id": products[0]}, None

    def get_any(n: int) -> Request:
        start, days = any_span(n)
        query = {
            "product_id": "total" if n % 2 else products[1],
            "start": start.isoformat(),
            "days": str(days),
        }
        return "GET", f"/v1/stores/{store_of(n)}/forecast", query, None

    def post_one(n: int) -> Request:
        start, days = any_span(n)
        item = {
            "store_id": store_of(n),
            "product_id": products[2],
            "start": start.isoformat(),
            "days": days,
            "covariates": covariates(start, days, n),
        }
        return "POST", "/v1/forecast", None, [item]

    def post_every_store(n: int) -> Request:
        items = [
            {"store_id": store, "product_id": products[3], "start": first.isoformat(), "days": 7,
             "covariates": covariates(first, 7, n + store)}
            for store in range(1, stores + 1)
        ]  # fmt: skip
        return "POST", "/v1/forecast", None, items

    return {
        f"GET default horizon (7 days), {products[0]}": get_default,
        f"GET any start and days within the calibrated horizon, {products[1]} or total": get_any,
        "POST one series with covariates, any start and days within the horizon": post_one,
        f"POST every store ({stores:,}) x 7 days with covariates, {products[3]}": post_every_store,
    }


def measure(
    url: str,
    headers: dict[str, str],
    request_of: Callable[[int], Request],
    connections: int,
    per_connection: int,
    answers: Path | None = None,
) -> dict[str, Any]:
    """`connections` threads, each with its own keep-alive connection, send `per_connection`
    requests in turn; latency percentiles and requests per second over the wall time. The
    first answer is written to `answers` (to compare revisions' forecasts)."""
    # Requests are built and their bodies encoded before timing (the client's JSON encoder
    # is not the API's cost); connection k sends requests k, k + connections, ...
    planned = [
        [encoded(request_of(n * connections + k)) for n in range(per_connection)]
        for k in range(connections)
    ]
    first_answer: list[bytes] = []
    latencies: list[list[float]] = [[] for _ in range(connections)]
    failures: list[BaseException] = []
    barrier = threading.Barrier(connections + 1)

    def run(k: int) -> None:
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
                client.get("/health").raise_for_status()  # connect before the clock starts
                barrier.wait()
                for method, path, query, body in planned[k]:
                    sent = time.perf_counter()
                    response = client.request(
                        method, path, params=query, content=body, headers=JSON_BODY
                    )
                    latencies[k].append((time.perf_counter() - sent) * 1000)
                    response.raise_for_status()
                    if k == 0 and not first_answer:  # request 0: the same in every run
                        first_answer.append(response.content)
        except BaseException as error:
            failures.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(connections)]
    load_before = load_average()
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"a request failed: {failures[0]!r}") from failures[0]
    every = sorted(itertools.chain.from_iterable(latencies))
    if answers is not None:
        answers.write_bytes(first_answer[0])
    return {
        "connections": connections,
        "requests": len(every),
        "seconds": round(seconds, 2),
        "requests_per_second": round(len(every) / seconds, 1),
        "p50_ms": round(statistics.median(every), 2),
        "p99_ms": round(every[max(0, math.ceil(0.99 * len(every)) - 1)], 2),
        "max_ms": round(every[-1], 2),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def latency_table(latency: list[dict[str, Any]]) -> str:
    lines = [
        "| case | connections | requests | req/s | p50 ms | p99 ms | max ms | load before / after |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {row['case']} | {row['connections']} | {row['requests']:,} | "
        f"{row['requests_per_second']:,.1f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
        f"{row['max_ms']:.1f} | {row['load_average_before']} / {row['load_average_after']} |"
        for row in latency
    ]
    return "\n".join(lines)


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


# The steps whose growth is measured, with what their cost is measured in.
STEPS = {
    "synth_s": "s",
    "load_s": "s",
    "database_mib": "MiB",
    "train_s": "s",
    "train_peak_rss_mib": "MiB",
    "forecast_s": "s",
    "api_start_s": "s",
    "api_rss_mib": "MiB",
    "get_p99_ms": "ms",
    "get_any_p99_ms": "ms",
}


def growth_exponents(rows: list[dict[str, Any]], start_s: float) -> list[dict[str, Any]]:
    steps = list(STEPS)
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
    keys = [
        key
        for key in rows[0]
        if key
        not in (
            "train_command",
            "stores",
            "products",
            "days",
            "api_stores",
            "api_products",
            "latency",
        )
    ]
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


def loglog_table(rows: list[dict[str, Any]], exponents: list[dict[str, Any]]) -> str:
    """Markdown: per step, its cost at each series count with log10(cost) in brackets, and
    its growth exponent between consecutive counts (the slope on log-log axes)."""
    header = ["step"] + [
        f"{row['series']:,} series (log10 {math.log10(row['series']):.0f})" for row in rows
    ]
    header += [f"exponent {e['from']:,} -> {e['to']:,}" for e in exponents]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for step, unit in STEPS.items():
        cells = []
        for row in rows:
            value = row.get(step)
            cells.append(
                f"{value:,.1f} {unit} ({math.log10(value):.2f})"
                if isinstance(value, int | float) and value > 0
                else "-"
            )
        cells += [str(e.get(step, "-")) for e in exponents]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines.append("\ntrain_s includes the command's start-up; its exponent excludes it.")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Each step's cost against series count on log-log axes (one panel per unit), as PNG."""
    import matplotlib  # noqa: PLC0415 - only the report draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    units = sorted(set(STEPS.values()))
    figure, axes = plt.subplots(1, len(units), figsize=(5 * len(units), 4.5))
    series = [row["series"] for row in rows]
    for axis, unit in zip(axes, units, strict=True):
        for step in (name for name, of in STEPS.items() if of == unit):
            points = [
                (count, row[step])
                for count, row in zip(series, rows, strict=True)
                if isinstance(row.get(step), int | float) and row[step] > 0
            ]
            if points:
                axis.loglog(*zip(*points, strict=True), marker="o", label=step)
        axis.set_xlabel("series")
        axis.set_ylabel(unit)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle("sfmlops cost against series count (log-log; slope = growth exponent)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


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
