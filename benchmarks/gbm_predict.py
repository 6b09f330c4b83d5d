"""Benchmark: one registered bundle's `predict` in process, the work behind POST /v1/forecast
with the caller's covariates, beside a baseline revision of the code in the same run.

Requests (open days, promotion every other day, no holidays):
- one series x 14 days (the first series of the bundle);
- every store's first series x 7 days.
Each runs `--repeats` times after one warm-up call, in a fresh process per code revision
(this checkout, then `--baseline-src`, alternately `--rounds` times); both must give the
same forecasts (checked here). Each call's wall and CPU time are kept: on shared cores the
CPU time is the steadier figure. `--profile N` prints, per request, this checkout's N
functions with the most time of their own over the timed calls (cProfile), and times
nothing else.

    git worktree add /tmp/sfmlops-baseline 8151395
    PYTHONPATH=src .venv/bin/python benchmarks/gbm_predict.py \\
        --bundle HOME/models/versions/1 --baseline-src /tmp/sfmlops-baseline/src

A bundle folder is HOME/models/versions/N of an embedded home (`sfmlops train`).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

SRC = Path(__file__).resolve().parent.parent / "src"


def request(last_date: pd.Timestamp, series: pd.DataFrame, days: int) -> pd.DataFrame:
    from sfmlops.core import columns  # noqa: PLC0415 - from the revision under test

    dates = pd.date_range(last_date + pd.Timedelta(days=1), periods=days, freq="D")
    frame = series.merge(pd.DataFrame({columns.SALES_DATE: dates}), how="cross")
    frame[columns.OPEN] = 1
    frame[columns.PROMO] = (frame[columns.SALES_DATE].dt.day % 2).astype(int)
    frame[columns.STATE_HOLIDAY] = "0"
    frame[columns.SCHOOL_HOLIDAY] = 0
    return frame


def measure(
    bundle_path: Path, repeats: int, forecasts: Path, profile: int = 0
) -> dict[str, object]:
    """Time each request in this process (the code on sys.path) and save its forecasts;
    with `profile`, print each request's most expensive functions instead."""
    from sfmlops.core import columns  # noqa: PLC0415
    from sfmlops.core.forecasting.bundle import ForecastBundle  # noqa: PLC0415

    started = time.perf_counter()
    bundle = ForecastBundle.load(bundle_path, signing_key=None)
    load_seconds = time.perf_counter() - started
    series = bundle.champions[[columns.STORE_ID, columns.PRODUCT_ID]]
    first_per_store = series.drop_duplicates(columns.STORE_ID)
    requests = {
        "one series x 14 days": request(bundle.last_date, series.head(1), 14),
        f"{len(first_per_store):,} series x 7 days": request(bundle.last_date, first_per_store, 7),
    }
    seconds: dict[str, list[float]] = {}
    cpu_seconds: dict[str, list[float]] = {}
    frames = []
    for name, future in requests.items():
        frames.append(bundle.predict(future).frame.assign(request=name))  # warm-up
        if profile:
            profiler = cProfile.Profile(time.process_time)
            for _ in range(repeats):
                profiler.runcall(bundle.predict, future)
            print(f"{name}: {repeats} calls", file=sys.stderr)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(profile)
        seconds[name], cpu_seconds[name] = [], []
        for _ in range(repeats):
            started, started_cpu = time.perf_counter(), time.process_time()
            bundle.predict(future)
            seconds[name].append(time.perf_counter() - started)
            cpu_seconds[name].append(time.process_time() - started_cpu)
    pd.concat(frames, ignore_index=True).to_pickle(forecasts)
    return {
        "series": len(series),
        "load_s": load_seconds,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }


def run_revision(src: Path, args: argparse.Namespace, forecasts: Path) -> dict[str, object]:
    """`measure` in a fresh interpreter importing sfmlops from `src`."""
    command = [sys.executable, __file__, "--measure", str(forecasts)]
    command += ["--bundle", str(args.bundle), "--repeats", str(args.repeats)]
    if args.profile and src == SRC:
        command += ["--profile", str(args.profile)]
    environment = {**os.environ, "PYTHONPATH": str(src)}
    # The profile (stderr) is shown as it comes.
    output = subprocess.run(
        command, env=environment, check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    result: dict[str, object] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="HOME/models/versions/N")
    parser.add_argument("--baseline-src", type=Path, help="the baseline revision's src folder")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--profile", type=int, default=0, help="print this many top functions per request"
    )
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.bundle, args.repeats, args.measure, args.profile)))
        return

    revisions = {"current": SRC}
    if args.baseline_src is not None:
        revisions["baseline"] = args.baseline_src.resolve()
    seconds: dict[str, dict[str, list[float]]] = {name: {} for name in revisions}
    cpu_seconds: dict[str, dict[str, list[float]]] = {name: {} for name in revisions}
    with tempfile.TemporaryDirectory() as folder:
        saved = {name: Path(folder) / f"{name}.pkl" for name in revisions}
        for _ in range(args.rounds):
            for name, src in revisions.items():
                result = run_revision(src, args, saved[name])
                for request_name, values in result["seconds"].items():  # type: ignore[attr-defined]
                    seconds[name].setdefault(request_name, []).extend(values)
                for request_name, values in result["cpu_seconds"].items():  # type: ignore[attr-defined]
                    cpu_seconds[name].setdefault(request_name, []).extend(values)
        if "baseline" in revisions:
            pd.testing.assert_frame_equal(
                pd.read_pickle(saved["current"]), pd.read_pickle(saved["baseline"])
            )
    print(f"bundle {args.bundle}: {result['series']:,} series")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()}")
    names = list(revisions)
    for title, timings in (("wall", seconds), ("CPU", cpu_seconds)):
        print(f"\n{title} time per call")
        print("| request | " + " | ".join(f"{n} p50 / max ms" for n in names) + " | speed-up |")
        print("|---|" + "---:|" * (len(names) + 1))
        for request_name in timings["current"]:
            medians = {n: statistics.median(timings[n][request_name]) for n in names}
            cells = [
                f"{medians[n] * 1000:,.1f} / {max(timings[n][request_name]) * 1000:,.1f}"
                for n in names
            ]
            ratio = medians["baseline"] / medians["current"] if "baseline" in medians else 1.0
            print(f"| {request_name} | " + " | ".join(cells) + f" | {ratio:.1f}x |")
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds}))


if __name__ == "__main__":
    main()
