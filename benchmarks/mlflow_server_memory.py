"""The MLflow tracking server's processes and memory, with and without MLflow's job execution.

Not part of `make test`. Run from the repository root:

    python benchmarks/mlflow_server_memory.py [--rounds 2] [--workers 2]
        [--output benchmarks/results/mlflow_server_memory.json]

Starts `sfmlops mlflow` (SQLite store, an empty home) with MLFLOW_SERVER_ENABLE_JOB_EXECUTION
set to `true` (MLflow's default) and to `false` (sfmlops's), alternated round by round: the
seconds until `GET /health` answers, then, after a settling pause, the processes of the
server's tree and their summed RSS.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from forecast_backtest import (
    alternated,
    print_table,
    save,
)  # the benchmarks' shared output helpers
from scale import machine  # the machine's description, as the scale benchmark records it
from training_job_costs import SFMLOPS, environment, wait_for

SETTLE_SECONDS = 20  # MLflow starts its job consumers a few seconds after answering /health


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/mlflow_server_memory.json")
    )
    args = parser.parse_args()
    runs = alternated(
        args.rounds, ("true", "false"), lambda enabled: measure(enabled, args.workers)
    )
    print_table(
        ["job execution", "processes", "RSS (MiB)", "ready (s)", "load"],
        (
            [
                run["job_execution"],
                run["processes"],
                f"{run['rss_mib']:,}",
                run["ready_seconds"],
                run["load_before"],
            ]
            for run in runs
        ),
    )
    save({"machine": machine(), "workers": args.workers, "runs": runs}, args.output)


def measure(job_execution: str, workers: int) -> dict[str, Any]:
    """One server start: seconds to /health, then its tree's processes and RSS."""
    with tempfile.TemporaryDirectory(prefix="mlflow-memory-") as home, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        env = environment(Path(home)) | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": job_execution}
        load = round(os.getloadavg()[0], 1)
        started = time.perf_counter()
        server = subprocess.Popen(
            [SFMLOPS, "mlflow", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # the workers and consumers go down with it
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/health")
            ready = time.perf_counter() - started
            time.sleep(SETTLE_SECONDS)
            root = psutil.Process(server.pid)
            tree = [root, *root.children(recursive=True)]
            rss = sum(process.memory_info().rss for process in tree)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    return {
        "job_execution": job_execution,
        "ready_seconds": round(ready, 1),
        "processes": len(tree),
        "rss_mib": round(rss / 2**20),
        "load_before": load,
    }


if __name__ == "__main__":
    main()
