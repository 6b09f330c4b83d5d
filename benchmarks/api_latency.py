"""Benchmark: forecast API latency and throughput, beside the reference design, in one run.

1. `sfmlops serve --workers 2` (gunicorn + uvicorn workers, access logs on, as deployed) on
   a HOME with the bundled data and a registered champion; `wrk` (a separate process, one
   thread) drives it:
   - GET /v1/stores/{id}/forecast (default horizon: days=7 from the day after the as-of
     date, precomputed at load), a random store of 1,115 per request;
   - the same with start=2015-06-20&days=30 (predicted per request);
   - POST /v1/forecast for all 1,115 stores x 7 days, default horizon and start=2015-06-20;
   - POST /v1/forecast with the caller's covariates for every day (so predicted per
     request): one store x 14 days, and all 1,115 stores x 7 days.
2. The reference design: a FastAPI endpoint that loads the champion from the registry
   (`mlflow.pyfunc.load_model("models:/sfmlops-forecaster@champion")`) inside every request,
   then predicts 7 days for one store; one uvicorn process, driven by the same wrk.

    PYTHONPATH=src .venv/bin/python benchmarks/api_latency.py --home /tmp/sfmlops-bench/home

`--cases covariates` runs only the GET of the default horizon (2 connections) and the POSTs
with covariates, without the reference design; with `--baseline-src BASELINE/src` (a
worktree of another revision; repeatable) the same cases run against that revision's server
too, one after the other in the same run; `--post-connections 1,2` runs each POST with one
connection, then two. `--plan-days N` first stores a plan for every store's N days from
2015-06-14 (`sfmlops load-plan`; it stays in HOME), so the POSTs also look up planned days.

A HOME without a champion is prepared first (`sfmlops load-data`, then
`sfmlops train --models seasonal_naive,gbm --windows 1 --executor sequential`, a few minutes).
Needs `wrk` (`make benchmark-deps`). Prints a Markdown table and the figures as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

STORES = 1115
LATER_START = "2015-06-20"
REFERENCE_START = "2015-06-14"
SFMLOPS = str(Path(sys.executable).with_name("sfmlops"))

WRK_REPORT = """
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  io.write(string.format(
    'WRK_JSON {"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p90_ms": %.3f, '
    .. '"p99_ms": %.3f, "max_ms": %.3f, "errors": %d, "non_2xx": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(90) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    errors, summary.errors.status))
end
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{os.cpu_count()} vCPUs ({cpu}), {memory_kib / 2**20:.1f} GiB, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFMLOPS_")}
    return env | {
        "SFMLOPS_HOME": str(home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def store_plan(home: Path, work: Path, days: int) -> None:
    """A plan for every store's `days` days from REFERENCE_START (promotion on alternate
    weekdays, closed on Sundays), stored with `sfmlops load-plan`."""
    start = dt.date.fromisoformat(REFERENCE_START)
    lines = ["Store,Date,Open,Promo,StateHoliday,SchoolHoliday"]
    for store in range(1, STORES + 1):
        for offset in range(days):
            day = start + dt.timedelta(days=offset)
            weekday = day.isoweekday() < 6
            lines.append(
                f"{store},{day},{int(day.isoweekday() != 7)},{int(weekday and offset % 2 == 0)},0,0"
            )
    path = work / "plan.csv"
    path.write_text("\n".join(lines) + "\n")
    subprocess.run([SFMLOPS, "load-plan", str(path)], env=environment(home), check=True)


def prepare(home: Path) -> None:
    """Load the bundled data and train a champion unless the HOME has one."""
    if (home / "mlflow.db").is_file():
        return
    env = environment(home)
    print("preparing", home, "(load-data, then train seasonal_naive + gbm)", flush=True)
    subprocess.run([SFMLOPS, "load-data"], env=env, check=True)
    subprocess.run(
        [SFMLOPS, "train", "--models", "seasonal_naive,gbm", "--windows", "1",
         "--executor", "sequential"],
        env=env,
        check=True,
    )  # fmt: skip


@contextmanager
def running(command: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[None]:
    """A server process (in its own session) until the block ends; waits for `ready_url`."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 600
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{command[:3]} exited; see {log}")
                try:
                    if httpx.get(ready_url, timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ready_url} never became ready; see {log}")
                time.sleep(0.5)
            yield
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wrk(
    url: str, script: str, *, connections: int, seconds: int, work: Path, name: str
) -> dict[str, Any]:
    """Run wrk with a Lua script; returns its figures plus the load average before."""
    lua = work / f"{re.sub('[^a-z0-9]+', '-', name.lower())}.lua"
    lua.write_text(script + WRK_REPORT)
    load = load_average()
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "120s",
         "-s", str(lua), url],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    line = next(x for x in result.stdout.splitlines() if x.startswith("WRK_JSON "))
    figures: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    figures["requests_per_second"] = figures["requests"] / figures["seconds"]
    figures |= {"name": name, "connections": connections, "load_average_before": load}
    print(json.dumps(figures), flush=True)
    return figures


def random_store_get(query: str) -> str:
    return f"""
math.randomseed(7)
request = function()
  return wrk.format("GET", "/v1/stores/" .. math.random(1, {STORES}) .. "/forecast{query}")
end
"""


def post_body(path: Path, start: str | None) -> str:
    items = [
        {"store_id": store} | ({"start": start} if start else {}) for store in range(1, STORES + 1)
    ]
    return post_body_of(path, items)


def post_covariates_body(path: Path, stores: int, days: int) -> str:
    """Every day's covariates given (open except Sundays, promotion every other day, no
    holidays): the API predicts such a request, it cannot slice the precomputed horizon."""
    start = dt.date.fromisoformat(REFERENCE_START)
    dates = [start + dt.timedelta(days=offset) for offset in range(days)]
    covariates = [
        {
            "date": day.isoformat(),
            "open": int(day.isoweekday() != 7),
            "promo": day.day % 2,
            "state_holiday": "0",
            "school_holiday": 0,
        }
        for day in dates
    ]
    items = [
        {"store_id": store, "start": REFERENCE_START, "days": days, "covariates": covariates}
        for store in range(1, stores + 1)
    ]
    return post_body_of(path, items)


def post_body_of(path: Path, items: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps(items))
    return f"""
local file = io.open("{path}", "r")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.path = "/v1/forecast"
"""


def covariate_cases(
    url: str, work: Path, seconds: int, label: str, connections: tuple[int, ...] = (1,)
) -> list[dict[str, Any]]:
    """POST /v1/forecast with the caller's covariates: one store x 14 days, then every store x
    7 days, each with every count of `connections` in turn (one: a request's latency, not a
    queue's; two: one request per worker at a time, as two callers would)."""
    one = post_covariates_body(work / f"one-{label}.json", 1, 14)
    every = post_covariates_body(work / f"all-{label}.json", STORES, 7)
    return [
        wrk(url, body, connections=count, seconds=seconds, work=work,
            name=f"{label}POST /v1/forecast with covariates, {what}")
        for body, what in ((one, "1 store x 14 days"), (every, "1,115 stores x 7 days"))
        for count in connections
    ]  # fmt: skip


def ours(
    home: Path,
    work: Path,
    seconds: int,
    connections: int,
    cases: str = "all",
    src: Path | None = None,
    label: str = "",
    post_connections: tuple[int, ...] = (1,),
) -> list[dict[str, Any]]:
    """Our server's figures; with `src`, the server imports sfmlops from that folder, and
    every case's name starts with `label`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [SFMLOPS, "serve", "--workers", "2", "--port", str(port)]
    env = environment(home) | ({"PYTHONPATH": str(src)} if src is not None else {})
    results = []
    with running(command, env, f"{url}/ready", work / f"serve{label.strip()}.log"):
        # Both workers answer /ready only once each has loaded the champion; make sure
        # every worker is warm before measuring.
        for _ in range(20):
            with httpx.Client() as fresh:
                fresh.get(f"{url}/v1/stores/1/forecast", params={"days": 30}).raise_for_status()
        if cases == "covariates":
            results.append(
                wrk(url, random_store_get(""), connections=2, seconds=seconds, work=work,
                    name=f"{label}GET forecast, default horizon (days=7)")
            )  # fmt: skip
            results.extend(covariate_cases(url, work, seconds, label, post_connections))
            return results
        for concurrency in sorted({2, connections}):
            results.append(
                wrk(url, random_store_get(""), connections=concurrency, seconds=seconds,
                    work=work, name="GET forecast, default horizon (days=7)")
            )  # fmt: skip
        # Predicted per request: one connection per worker, so the figure is a request's
        # latency rather than a queue's.
        results.append(
            wrk(url, random_store_get(f"?start={LATER_START}&days=30"), connections=2,
                seconds=seconds, work=work, name=f"GET forecast, start={LATER_START}, days=30")
        )  # fmt: skip
        results.append(
            wrk(url, post_body(work / "default.json", None), connections=1, seconds=seconds,
                work=work, name="POST /v1/forecast, 1,115 stores x 7 days, default horizon")
        )  # fmt: skip
        results.append(
            wrk(url, post_body(work / "later.json", LATER_START), connections=1, seconds=seconds,
                work=work, name=f"POST /v1/forecast, 1,115 stores x 7 days, start={LATER_START}")
        )  # fmt: skip
        results.extend(covariate_cases(url, work, seconds, label))
    return results


def reference(home: Path, work: Path, seconds: int) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, __file__, "reference-server", "--port", str(port)]
    env = environment(home) | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    with running(command, env, f"{url}/health", work / "reference.log"):
        return wrk(
            url,
            random_store_get(""),
            connections=1,
            seconds=seconds,
            work=work,
            name="reference: load the model from the registry in every request",
        )


def reference_server(port: int) -> None:
    """The reference design: `mlflow.pyfunc.load_model` inside every request."""
    import mlflow  # noqa: PLC0415 - only the reference server needs it
    import pandas as pd  # noqa: PLC0415
    import uvicorn  # noqa: PLC0415
    from fastapi import FastAPI  # noqa: PLC0415

    from sfmlops.adapters import mlflow_registry  # noqa: PLC0415
    from sfmlops.settings import Settings  # noqa: PLC0415

    mlflow_registry.connect(Settings())
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/stores/{store_id}/forecast")
    def forecast(store_id: int) -> list[dict[str, Any]]:
        model = mlflow.pyfunc.load_model(f"models:/{mlflow_registry.MODEL_NAME}@champion")
        future = pd.DataFrame(
            {"store_id": store_id, "sales_date": pd.date_range(REFERENCE_START, periods=7)}
        )
        frame = model.predict(future)
        frame["sales_date"] = frame["sales_date"].dt.strftime("%Y-%m-%d")
        records: list[dict[str, Any]] = frame.to_dict("records")
        return records

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| case | connections | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| load avg before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['connections']} | {r['requests']:,} | "
            f"{r['requests_per_second']:,.1f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['errors'] + r['non_2xx']} | "
            f"{r['load_average_before']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    server = sub.add_parser("reference-server")
    server.add_argument("--port", type=int, required=True)
    parser.add_argument("--home", type=Path, default=Path("/tmp/sfmlops-bench/home"))
    parser.add_argument("--seconds", type=int, default=20, help="Duration of each wrk run.")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections for GETs.")
    parser.add_argument("--reference-seconds", type=int, default=60)
    parser.add_argument("--cases", choices=["all", "covariates"], default="all")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        action="append",
        default=[],
        help="another revision's src folder (with --cases covariates; repeatable)",
    )
    parser.add_argument(
        "--post-connections",
        default="1",
        help="wrk connections for the POSTs with covariates, comma-separated (e.g. 1,2)",
    )
    parser.add_argument(
        "--plan-days", type=int, default=0, help="store a plan of N days for every store first"
    )
    args = parser.parse_args()
    if args.command == "reference-server":
        reference_server(args.port)
        return
    home = args.home.absolute()
    prepare(home)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="sfmlops-api-bench-") as scratch:
        work = Path(scratch)
        if args.plan_days:
            store_plan(home, work, args.plan_days)
        if args.cases == "covariates":
            source = Path(__file__).resolve().parent.parent / "src"
            posts = tuple(int(count) for count in args.post_connections.split(","))
            results = ours(
                home, work, args.seconds, 2, "covariates", source, "current: ", posts
            )  # fmt: skip
            for number, baseline in enumerate(args.baseline_src, start=1):
                label = "baseline: " if len(args.baseline_src) == 1 else f"baseline {number}: "
                results += ours(
                    home, work, args.seconds, 2, "covariates", baseline.resolve(), label, posts
                )  # fmt: skip
        else:
            results = ours(home, work, args.seconds, args.connections)
            results.append(reference(home, work, args.reference_seconds))
    print(f"\n{started}, {machine()}\n")
    print(table(results))
    print(json.dumps({"started": started, "machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
