"""Sharded gbm training: time and peak memory of a training per shard size, side by side.

Not part of `make test`. Each shard size runs in a fresh process, so each peak RSS is its
own: read and validate a `sfmlops synth` folder, then `model_selection.train` with gbm
alone and one backtest window (the fits of `sfmlops train --models gbm --windows 1`,
without the database and MLflow around them), in this process, shards fitted in turn.

    sfmlops synth --stores 1000 --products 10 --out /tmp/synth-10k
    python benchmarks/gbm_shards.py --data /tmp/synth-10k [--shard-series 10000,5000,2500] \
        [--executors sequential,processes]

Baseline: the largest shard size given (10,000 by default: one model for 10k series, the
model before shards existed). `--executors` runs each shard size with each executor: shards
in turn in this process (`sequential`, threads from `GBMParams`), or side by side in worker
processes (`processes`, as `sfmlops train` runs them without a Ray cluster). Peak RSS is
the measuring process's own and, sampled every 0.5 s, its process tree's (workers included).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import psutil

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics, model_selection
from sfmlops.core.forecasting.executors import (
    Executor,
    ProcessPoolTaskExecutor,
    SequentialExecutor,
)
from sfmlops.core.forecasting.gbm import GBMParams, GlobalGBMForecaster
from sfmlops.services.loading import read_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a `sfmlops synth` folder")
    parser.add_argument("--shard-series", default="10000,5000,2500")
    parser.add_argument("--executors", default="sequential", help="sequential, processes")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--executor", default="sequential", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.data, args.child, args.executor)), flush=True)
        return
    rows = []
    for shard_series in sorted({int(size) for size in args.shard_series.split(",")}, reverse=True):
        for executor in args.executors.split(","):
            load = " ".join(f"{value:.1f}" for value in os.getloadavg())
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--data",
                    str(args.data),
                    "--child",
                    str(shard_series),
                    "--executor",
                    executor,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(done.stdout.strip().splitlines()[-1]) | {"load_before": load}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key in keys) + " |")


def measure(folder: Path, shard_series: int, executor_kind: str) -> dict[str, object]:
    executor: Executor = (
        ProcessPoolTaskExecutor() if executor_kind == "processes" else SequentialExecutor()
    )
    tree_peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            tree_peak[0] = max(tree_peak[0], tree_rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    dataset = read_dataset(folder)
    history = dataset.sales
    read_s = time.perf_counter() - started
    rss_after_read = psutil.Process().memory_info().rss / 2**20
    started = time.perf_counter()
    bundle, report = model_selection.train(
        history,
        dataset.stores,
        ["gbm"],
        windows=1,
        factories={
            "gbm": partial(
                GlobalGBMForecaster, GBMParams(shard_series=shard_series), executor=executor
            )
        },
    )
    train_s = time.perf_counter() - started
    stop.set()
    sampler.join()
    gbm = bundle.models["gbm"]
    assert isinstance(gbm, GlobalGBMForecaster)
    reported = report.reported()
    reported = reported[reported[columns.MODEL] == "gbm"]
    return {
        "shard_series": shard_series,
        "executor": executor_kind,
        "series": int(history[[columns.STORE_ID, columns.PRODUCT_ID]].drop_duplicates().shape[0]),
        "rows": len(history),
        "shards": len(gbm.shards_) if gbm.shards_ else 1,
        "read_s": round(read_s, 1),
        "rss_after_read_mib": round(rss_after_read),
        "train_s": round(train_s, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_tree_rss_mib": round(max(tree_peak[0], tree_rss_mib())),
        "rmspe": round(float(reported[metrics.RMSPE].iloc[0]), 4),
    }


def tree_rss_mib() -> float:
    """RSS of this process and its children (the executor's workers), MiB."""
    root = psutil.Process()
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total / 2**20


if __name__ == "__main__":
    main()
