"""Sharded gbm training on a Ray cluster of several nodes against its head alone.

Not part of `make test`. Run from the repository root:

    python benchmarks/ray_nodes.py --data DIR [--workers 2] [--port 6390]

DIR is a `sfmlops synth` folder (e.g. `sfmlops synth --stores 1000 --products 10 --days 365`
for 10k series). The folder is loaded once into a fresh SQLite HOME; then a Ray cluster is
started as separate `ray start` processes on this machine, a head and `--workers` worker nodes
with 1 CPU each, and `sfmlops train --models gbm --windows 1 --executor ray` runs against it
(SFMLOPS_RAY_ADDRESS); then the same with the head alone (the baseline). Every node runs with
RAY_AUTH_MODE=token: Ray's token file (~/.ray/auth_token) is shared by processes of one machine,
and a worker node without the head's mode is refused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # the scale benchmark's timers and environment

RAY = str(Path(sys.executable).with_name("ray"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a `sfmlops synth` folder")
    parser.add_argument("--workers", type=int, default=2, help="worker nodes beside the head")
    parser.add_argument("--port", type=int, default=6390, help="the head's GCS port")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sfmlops-ray-nodes-") as work:
        env = scale.environment(Path(work) / "home", None)
        env |= {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
        scale.log(f"loading {args.data} (load average {scale.load_average()})")
        scale.timed([scale.SFMLOPS, "load-data", "--path", str(args.data)], env)
        results = []
        for workers in (args.workers, 0):
            address = start_cluster(args.port, workers, env)
            try:
                scale.log(f"{1 + workers} node(s) (load average {scale.load_average()})")
                train = scale.timed(
                    [scale.SFMLOPS, "train", "--models", "gbm", "--windows", "1",
                     "--executor", "ray"],
                    env | {"SFMLOPS_RAY_ADDRESS": address},
                )  # fmt: skip
            finally:
                subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, check=False)
            results.append({"nodes": 1 + workers, "cpus_per_node": 1, "train_s": train.seconds})
        speedup = results[1]["train_s"] / results[0]["train_s"]
        print(json.dumps({"results": results, "speedup": round(speedup, 2), **scale.machine()}))
        print(f"speed-up of {results[0]['nodes']} nodes over one: {speedup:.2f}x")


def start_cluster(port: int, workers: int, env: dict[str, str]) -> str:
    """A head and `workers` worker nodes, 1 CPU each, as `ray start` processes; the address."""
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, check=False)
    head = [RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false", *common]
    subprocess.run(head, env=env, capture_output=True, check=True, timeout=120)
    for _ in range(workers):
        worker = [RAY, "start", "--address", address, *common]
        subprocess.run(worker, env=env, capture_output=True, check=True, timeout=120)
    return address


if __name__ == "__main__":
    main()
