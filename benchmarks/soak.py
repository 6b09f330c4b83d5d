"""Soak: the forecast API under steady mixed reads for minutes, with champion hot-swaps.

`sfmlops serve --workers 2` (gunicorn + uvicorn workers, as deployed) on a HOME with the
bundled data and two registered versions; `wrk` (one thread, a separate process) sends mixed
reads, one wrk run per minute so that each minute has its own p99:
  - 85 % GET /v1/stores/{id}/forecast (a random store of 1,115, the default horizon),
  - 8 % GET /v1/stores/{id}, 2 % GET /v1/status, 5 % GET /ready.
(Computed horizons, about 300 ms of CPU each, are measured by benchmarks/api_latency.py: at
this rate a share of them would only measure the two cores.)
During the run the `champion` alias is moved between the two versions `--swaps` times, evenly
spaced; the API's poller (every 5 s here) loads the new version while requests go on.
Reported: errors (connection errors and non-2xx, which must be 0), requests per second and
p50/p99 per minute, and each worker's RSS at the first and last minute (growth should stay
within 10 %).

    PYTHONPATH=src .venv/bin/python benchmarks/soak.py --home /tmp/sfmlops-bench/home --minutes 10

A HOME without a champion is prepared first (as benchmarks/api_latency.py does), then a store
retrain registers the second version. Needs `wrk` (`make benchmark-deps`). Not part of
`make test`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from api_latency import (
    SFMLOPS,
    STORES,
    environment,
    free_port,
    load_average,
    machine,
    prepare,
    running,
    wrk,
)

MIXED_READS = f"""
math.randomseed(11)
request = function()
  local pick = math.random(1, 100)
  local store = math.random(1, {STORES})
  if pick <= 85 then
    return wrk.format("GET", "/v1/stores/" .. store .. "/forecast")
  elseif pick <= 93 then
    return wrk.format("GET", "/v1/stores/" .. store)
  elseif pick <= 95 then
    return wrk.format("GET", "/v1/status")
  else
    return wrk.format("GET", "/ready")
  end
end
"""


def two_versions(home: Path) -> tuple[str, str]:
    """Make sure the registry has a second version (a full seasonal-naive training, so each
    swap changes the models served); returns the newest two."""
    from sfmlops.adapters import mlflow_registry as registry  # noqa: PLC0415
    from sfmlops.settings import Settings  # noqa: PLC0415

    settings = Settings(_env_file=None, home=home)
    client = registry.connect(settings)
    versions = [str(v.version) for v in registry.list_versions(client)]
    if len(versions) < 2:
        subprocess.run(
            [SFMLOPS, "train", "--models", "seasonal_naive", "--windows", "1", "--force",
             "--executor", "sequential"],
            env=environment(home),
            check=True,
        )  # fmt: skip
        versions = [str(v.version) for v in registry.list_versions(client)]
    return versions[0], versions[1]


def swap_champion(home: Path, version: str) -> None:
    from sfmlops.adapters import mlflow_registry as registry  # noqa: PLC0415
    from sfmlops.settings import Settings  # noqa: PLC0415

    client = registry.connect(Settings(_env_file=None, home=home))
    registry.set_alias(client, registry.CHAMPION, version)


def worker_rss_kib(master_pid: int) -> dict[int, int]:
    """RSS of each gunicorn worker (the master's children), in KiB."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    rss = {}
    for child in children:
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss[int(child)] = int(line.split()[1])
    return rss


def gunicorn_master(port: int) -> int:
    """The pid of the gunicorn master listening on `port` (`sfmlops serve` execs gunicorn)."""
    found = subprocess.run(
        ["pgrep", "-f", f"gunicorn.*127.0.0.1:{port}"], capture_output=True, text=True, check=False
    ).stdout.split()
    pids = [int(pid) for pid in found]
    # The master is the one whose parent is not another match.
    for pid in pids:
        parent = int(Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[1])
        if parent not in pids:
            return pid
    raise RuntimeError(f"no gunicorn master on port {port}")


def soak(
    home: Path,
    work: Path,
    minutes: int,
    connections: int,
    swaps: int,
    versions: tuple[str, str] | None = None,
) -> dict[str, Any]:
    first, second = versions or two_versions(home)
    swap_champion(home, first)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = environment(home) | {"SFMLOPS_MODEL_POLL_SECONDS": "5"}
    command = [SFMLOPS, "serve", "--workers", "2", "--port", str(port)]
    per_minute: list[dict[str, Any]] = []
    swapped: list[str] = []
    with running(command, env, f"{url}/ready", work / "serve.log"):
        for _ in range(20):  # every worker warm before measuring
            httpx.get(f"{url}/v1/stores/1/forecast", params={"days": 30}).raise_for_status()
        master = gunicorn_master(port)
        rss_start = worker_rss_kib(master)
        swap_times = [minutes * 60 * (i + 1) / (swaps + 1) for i in range(swaps)]
        started = time.monotonic()

        def swapper() -> None:
            for i, at in enumerate(swap_times):
                time.sleep(max(0.0, started + at - time.monotonic()))
                version = second if i % 2 == 0 else first
                swap_champion(home, version)
                swapped.append(f"{time.monotonic() - started:.0f}s -> v{version}")

        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        rss_by_minute = []
        for minute in range(1, minutes + 1):
            figures = wrk(
                url, MIXED_READS, connections=connections, seconds=60, work=work,
                name=f"minute {minute}",
            )  # fmt: skip
            figures["rss_kib"] = worker_rss_kib(master)
            rss_by_minute.append(figures["rss_kib"])
            per_minute.append(figures)
        thread.join()
        served = httpx.get(f"{url}/ready").json()
    rss_end = rss_by_minute[-1]
    growth = {
        str(pid): rss_end[pid] / rss_by_minute[0][pid] - 1
        for pid in rss_end
        if pid in rss_by_minute[0]
    }
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
        "machine": machine(),
        "load_average_after": load_average(),
        "minutes": minutes,
        "connections": connections,
        "swaps": swapped,
        "served_after": served,
        "errors": sum(m["errors"] + m["non_2xx"] for m in per_minute),
        "requests": sum(m["requests"] for m in per_minute),
        "rss_kib_after_warmup": {str(k): v for k, v in rss_start.items()},
        "rss_growth_from_minute_1": growth,
        "per_minute": per_minute,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument(
        "--versions",
        help="The two registered versions to swap between, e.g. 1,3 (default: the newest two)",
    )
    args = parser.parse_args()
    versions = tuple(args.versions.split(",")) if args.versions else None
    prepare(args.home)
    with tempfile.TemporaryDirectory(prefix="sfmlops-soak-") as work:
        result = soak(
            args.home,
            Path(work),
            args.minutes,
            args.connections,
            args.swaps,
            versions,  # type: ignore[arg-type]
        )
    print("\n| minute | requests/s | p50 ms | p99 ms | errors | worker RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for index, m in enumerate(result["per_minute"], 1):
        rss = ", ".join(f"{v / 1024:.0f}" for v in m["rss_kib"].values())
        print(
            f"| {index} | {m['requests_per_second']:.0f} | {m['p50_ms']:.1f} | "
            f"{m['p99_ms']:.1f} | {m['errors'] + m['non_2xx']} | {rss} |"
        )
    print(json.dumps({k: v for k, v in result.items() if k != "per_minute"}, indent=2))


if __name__ == "__main__":
    main()
