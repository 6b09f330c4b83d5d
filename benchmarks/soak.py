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
p50/p99 per minute, and each worker's RSS after warm-up, per minute and at the end (growth
should stay within 10 %).

    PYTHONPATH=src .venv/bin/python benchmarks/soak.py --home /tmp/sfmlops-bench/home --minutes 10

A HOME without a champion is prepared first (as benchmarks/api_latency.py does), then a full
seasonal-naive training registers the second version. Needs `wrk` (`make benchmark-deps`).
`make test` runs a one-minute version (tests/e2e/test_soak.py: zero errors and bounded RSS
growth, never a rate).
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

WORKERS = 2  # gunicorn workers, as the chart's API runs them

MIXED_READS = """
math.randomseed(11)
{authorization}
request = function()
  local pick = math.random(1, 100)
  local store = math.random(1, {stores})
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


def mixed_reads(stores: int, token: str | None) -> str:
    """The wrk script: MIXED_READS over stores 1..`stores`, with the API token as a bearer
    credential if given."""
    authorization = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    return MIXED_READS.format(stores=stores, authorization=authorization)


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


def champion_loads(log: Path, version: str) -> int:
    """How often the server's workers logged serving `version` (each worker once per load)."""
    return log.read_text(errors="replace").count(f'"serving champion version {version}"')


def wait_until_served(log: Path, version: str, loads_before: int, timeout: float = 120) -> None:
    """Wait until both workers logged serving `version` since `loads_before` such lines.

    Asking /ready is not enough: a worker busy loading accepts few connections, so twenty
    answers in a row may all come from the other one, and the RSS baseline would be taken
    while the slow worker still held two bundles."""
    deadline = time.monotonic() + timeout
    while champion_loads(log, version) < loads_before + WORKERS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers did not all load version {version} in {timeout} s")
        time.sleep(0.5)


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
    seconds: int,
    connections: int,
    swaps: int,
    versions: tuple[str, str] | None = None,
    *,
    token: str | None = None,
    warmup_swaps: int = 0,
    stores: int = STORES,
) -> dict[str, Any]:
    """Serve `home` with two gunicorn workers and drive mixed reads for `seconds` (one wrk run
    per minute, the last one shorter), moving `champion` `swaps` times, evenly spaced.

    `warmup_swaps` round trips (to the second version and back) run before the RSS baseline
    is taken, so that the baseline includes the memory a swap keeps (the allocator holds the
    peak of two bundles loaded at once) and the growth measured is what the run adds.
    `token`: the server's SFMLOPS_API_TOKEN, sent with every request; `stores`: the reads pick
    stores 1..`stores` (those of the HOME's data). Returns the figures.
    """
    first, second = versions or two_versions(home)
    swap_champion(home, first)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = environment(home) | {"SFMLOPS_MODEL_POLL_SECONDS": "5"}
    if token:
        env["SFMLOPS_API_TOKEN"] = token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    command = [SFMLOPS, "serve", "--workers", str(WORKERS), "--port", str(port)]
    log = work / "serve.log"
    per_minute: list[dict[str, Any]] = []
    swapped: list[str] = []
    with running(command, env, f"{url}/ready", log):
        for _ in range(warmup_swaps):
            for version in (second, first):
                loads = champion_loads(log, version)
                swap_champion(home, version)
                wait_until_served(log, version, loads)
        for _ in range(20):  # every worker warm before measuring
            with httpx.Client() as fresh:
                fresh.get(
                    f"{url}/v1/stores/1/forecast", params={"days": 30}, headers=headers
                ).raise_for_status()
        master = gunicorn_master(port)
        rss_start = worker_rss_kib(master)
        swap_times = [seconds * (i + 1) / (swaps + 1) for i in range(swaps)]
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
        for minute, start in enumerate(range(0, seconds, 60), 1):
            figures = wrk(
                url, mixed_reads(stores, token), connections=connections,
                seconds=min(60, seconds - start), work=work, name=f"minute {minute}",
            )  # fmt: skip
            figures["rss_kib"] = worker_rss_kib(master)
            rss_by_minute.append(figures["rss_kib"])
            per_minute.append(figures)
        thread.join()
        served = httpx.get(f"{url}/ready").json()
    rss_end = rss_by_minute[-1]
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
        "machine": machine(),
        "load_average_after": load_average(),
        "seconds": seconds,
        "connections": connections,
        "warmup_swaps": warmup_swaps,
        "swaps": swapped,
        "served_after": served,
        "errors": sum(m["errors"] + m["non_2xx"] for m in per_minute),
        "requests": sum(m["requests"] for m in per_minute),
        "rss_kib_after_warmup": {str(k): v for k, v in rss_start.items()},
        "rss_kib_end": {str(k): v for k, v in rss_end.items()},
        # A worker that was replaced during the run has no baseline: it is missing here, and
        # the caller sees it by comparing the pids of the two RSS maps.
        "rss_growth_after_warmup": growth(rss_start, rss_end),
        "rss_growth_from_minute_1": growth(rss_by_minute[0], rss_end),
        "per_minute": per_minute,
    }


def growth(before: dict[int, int], after: dict[int, int]) -> dict[str, float]:
    """Each worker's RSS growth from `before` to `after`, as a fraction (0.1 = 10 %)."""
    return {str(pid): after[pid] / before[pid] - 1 for pid in after if pid in before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument(
        "--warmup-swaps", type=int, default=0,
        help="Champion round trips before the RSS baseline is taken",
    )  # fmt: skip
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
            args.minutes * 60,
            args.connections,
            args.swaps,
            versions,  # type: ignore[arg-type]
            warmup_swaps=args.warmup_swaps,
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
