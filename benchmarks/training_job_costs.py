"""Training-job benchmark: Ray vs a process pool vs the reference design, retrains, registry ops.

Not part of `make test`. Run from the repository root:

    python benchmarks/training_job_costs.py [--skip-full] [--reference-stores 1115]
        [--registry-versions 100] [--output benchmarks/results/training_job_costs.json]

1. Full training job on all 1,115 stores of the bundled data, as a user runs it
   (`sfmlops train`, default models, a real process on SQLite, embedded MLflow), once with
   `--executor ray` (a local Ray started by the command) and once with `--executor processes`:
   wall time and peak memory of the whole process tree (sampled every 0.5 s).
2. The reference system's design: one Ray task per store, each fitting Prophet on the
   store's last 4 months (yearly + weekly seasonality), on a local Ray with 2 CPUs.
3. Single-store retrain, end to end: `sfmlops train --stores 4` after the full job.
4. Registry operations with N versions of `sfmlops-forecaster` in a real `mlflow server`
   (SQLite backend): resolve the champion alias, list versions, load the champion as a
   pyfunc model; medians of 20 calls.

`--revisions SRC,SRC [--rounds 2]` instead times the default `sfmlops train` of each source
tree (a checkout's `src`, put first on PYTHONPATH), alternated round by round, each in a fresh
HOME loaded by that tree: wall time, CPU seconds and peak memory of the process tree, the load
average before each run. Alternating keeps a change in the machine's speed from favouring one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from forecast_backtest import log, save  # the benchmarks' shared output helpers
from scale import machine  # the machine's description, as the scale benchmark records it

SFMLOPS = str(Path(sys.executable).with_name("sfmlops"))
REFERENCE_MONTHS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-full", action="store_true", help="skip parts 1 and 3")
    parser.add_argument("--reference-stores", type=int, default=1115, help="0 skips part 2")
    parser.add_argument("--registry-versions", type=int, default=100)
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/training_job_costs.json")
    )
    parser.add_argument(
        "--revisions", default=None, help="source trees whose default `sfmlops train` is timed"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternations of --revisions")
    parser.add_argument("--train-stores", default=None, help="`--stores` of the timed training")
    args = parser.parse_args()
    if args.revisions:
        sources = [Path(source).absolute() for source in args.revisions.split(",")]
        print(revisions_table(alternated_trainings(sources, args.rounds, args.train_stores)))
        return
    results: dict[str, Any] = {"machine": machine()}
    if args.output.exists():  # parts run separately add up in one file
        results = json.loads(args.output.read_text()) | results
    home = Path(tempfile.mkdtemp(prefix="sfmlops-bench-"))
    env = environment(home)
    try:
        run(["load-data"], env)
        if not args.skip_full:
            results["full_job"] = [
                timed_command(["train", "--executor", executor], env)
                for executor in ("ray", "processes")
            ]
            save(results, args.output)
            results["single_store_retrain"] = timed_command(["train", "--stores", "4"], env)
            save(results, args.output)
        if args.reference_stores:
            results["reference_prophet_one_task_per_store"] = reference(args.reference_stores, home)
            save(results, args.output)
        results["registry"] = registry_operations(args.registry_versions, home)
        save(results, args.output)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(results, indent=2, default=str))


def alternated_trainings(
    sources: list[Path], rounds: int, stores: str | None
) -> list[dict[str, Any]]:
    """The default `sfmlops train` of each source tree in turn, `rounds` times, fresh HOMEs."""
    for source in sources:
        if not (source / "sfmlops" / "__init__.py").is_file():
            raise SystemExit(
                f"--revisions: {source} has no sfmlops package (give a checkout's src)"
            )
    runs = []
    for round_number in range(1, rounds + 1):
        for source in sources:
            home = Path(tempfile.mkdtemp(prefix="sfmlops-bench-"))
            env = environment(home) | {"PYTHONPATH": str(source)}
            try:
                run(["load-data"], env)
                load = " ".join(f"{value:.1f}" for value in os.getloadavg())
                arguments = ["train"] + (["--stores", stores] if stores else [])
                runs.append(
                    {"source": str(source), "round": round_number, "load_average_before": load}
                    | timed_command(arguments, env)
                )
            finally:
                shutil.rmtree(home, ignore_errors=True)
    return runs


def revisions_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| source | round | wall s | CPU s | peak MiB | load before |",
        "|---|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['source']} | {r['round']} | {r['seconds']} | {r['cpu_seconds']} "
        f"| {r['peak_memory_mib']:,} | {r['load_average_before']} |"
        for r in runs
    ]
    return "\n".join(lines)


def timed_command(arguments: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run `sfmlops ARGUMENTS`; wall time, CPU time and the process tree's peak memory."""
    log(f"sfmlops {' '.join(arguments)}")
    # CPU of every finished descendant its parent waited for (Ray's workers included), as
    # `/usr/bin/time` counts it.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(
        [SFMLOPS, *arguments], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = PeakMemory(process.pid)
    output, _ = process.communicate()
    seconds = time.perf_counter() - started
    peak.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise RuntimeError(f"sfmlops {' '.join(arguments)} failed:\n{output}")
    return {
        "command": "sfmlops " + " ".join(arguments),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(
            after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime, 1
        ),
        "peak_memory_mib": round(peak.peak / 2**20),
        "output_tail": [line for line in output.strip().splitlines() if line.strip()][-3:],
    }


class PeakMemory:
    """Samples the summed RSS of a process and all its descendants (Ray workers included)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(pid, interval), daemon=True)
        self._thread.start()

    def _sample(self, pid: int, interval: float) -> None:
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        while not self._done.is_set():
            total = 0
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            time.sleep(interval)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def reference(stores: int, home: Path) -> dict[str, Any]:
    """One Ray task per store fitting Prophet on its last 4 months (the reference's design)."""
    import ray  # noqa: PLC0415

    from sfmlops.core import columns  # noqa: PLC0415
    from sfmlops.datasets import ROSSMANN_DIR  # noqa: PLC0415
    from sfmlops.services.loading import read_dataset  # noqa: PLC0415

    history = read_dataset(ROSSMANN_DIR).sales
    start = history[columns.SALES_DATE].max() - pd.DateOffset(months=REFERENCE_MONTHS)
    recent = history[(history[columns.SALES_DATE] > start) & (history[columns.OPEN] == 1)]
    chosen = sorted(recent[columns.STORE_ID].unique())[:stores]
    frames = [
        pd.DataFrame({"ds": part[columns.SALES_DATE], "y": part[columns.SALES]})
        for _, part in recent[recent[columns.STORE_ID].isin(chosen)].groupby(columns.STORE_ID)
    ]
    temp_dir = Path(tempfile.mkdtemp(prefix="sfr-", dir="/tmp"))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=str(temp_dir),
        log_to_driver=False,
    )
    try:
        fit = ray.remote(num_cpus=1)(fit_prophet_store)
        log(f"reference: {len(frames)} Prophet tasks on Ray")
        peak = PeakMemory(os.getpid())
        started = time.perf_counter()
        ray.get([fit.remote(frame) for frame in frames])
        seconds = time.perf_counter() - started
        peak.stop()
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    return {
        "stores": len(frames),
        "seconds": round(seconds, 1),
        "seconds_per_store": round(seconds / len(frames), 3),
        "peak_memory_mib": round(peak.peak / 2**20),
        "note": "fits only: the reference also cross-validates each store (see forecast_backtest)",
    }


def fit_prophet_store(frame: pd.DataFrame) -> str:
    import logging  # noqa: PLC0415

    from prophet import Prophet  # noqa: PLC0415
    from prophet.serialize import model_to_json  # noqa: PLC0415

    logging.getLogger("cmdstanpy").disabled = True
    with tempfile.TemporaryDirectory() as folder:
        model = Prophet(yearly_seasonality=True, weekly_seasonality=True)
        model.fit(frame, output_dir=folder)
        return str(model_to_json(model))


def registry_operations(versions: int, home: Path) -> dict[str, Any]:
    """Champion alias, version list and champion load against a server holding N versions."""
    from sfmlops.adapters import mlflow_registry as registry  # noqa: PLC0415
    from sfmlops.adapters.db.engine import make_engine  # noqa: PLC0415
    from sfmlops.core.forecasting import model_selection  # noqa: PLC0415
    from sfmlops.services import training_data  # noqa: PLC0415
    from sfmlops.settings import Settings  # noqa: PLC0415

    server_home = home / "registry"
    server_home.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [SFMLOPS, "mlflow", "--port", str(port), "--workers", "2"],
        env=environment(server_home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health")
        settings = Settings(_env_file=None, home=home, mlflow_tracking_uri=url)
        engine = make_engine(settings.effective_database_url)
        data = training_data.read_training_data(engine, list(range(1, 21)))
        bundle, _ = model_selection.train(data.history, data.stores, ["seasonal_naive"], windows=1)
        folder = home / "tiny-bundle"
        bundle.save(folder)
        client = registry.connect(settings)
        import mlflow  # noqa: PLC0415

        log(f"registering {versions} versions")
        started = time.perf_counter()
        with registry.training_run(client, settings, "bench", {}) as run_id:
            registry.log_metrics({registry.RMSPE_METRIC: 0.2})
            first = registry.register_bundle(folder, run_id=run_id)
        registry.promote(client, first, force=True)
        register_seconds = time.perf_counter() - started
        # The other versions point at the same files: the registry's cost is what is
        # measured, not re-uploading one bundle N times.
        source = client.get_model_version(registry.MODEL_NAME, first.version).source
        model_id = source.removeprefix("models:/")  # MLflow 3: versions of a logged model
        for _ in range(versions - 1):
            version = client.create_model_version(
                registry.MODEL_NAME, source, run_id=first.run_id, model_id=model_id
            )
            client.set_registered_model_alias(registry.MODEL_NAME, "champion", version.version)
        model_uri = f"models:/{registry.MODEL_NAME}@champion"
        return {
            "versions": len(registry.list_versions(client)),
            "log_and_register_first_version_ms": round(register_seconds * 1000),
            "resolve_champion_alias_ms": median_ms(
                lambda: registry.version_with_alias(client, registry.CHAMPION)
            ),
            "list_versions_ms": median_ms(lambda: registry.list_versions(client)),
            "load_champion_pyfunc_ms": median_ms(
                lambda: mlflow.pyfunc.load_model(model_uri), repeat=10
            ),
            "bundle": "seasonal_naive on 20 stores (the load time grows with the bundle)",
        }
    finally:
        server.terminate()
        server.wait(timeout=60)


def median_ms(call: Callable[[], object], repeat: int = 20) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 1)


def wait_for(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer")


def environment(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SFMLOPS_")}
    return env | {"SFMLOPS_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}


def run(arguments: list[str], env: dict[str, str]) -> None:
    log(f"sfmlops {' '.join(arguments)}")
    subprocess.run([SFMLOPS, *arguments], env=env, check=True, capture_output=True)


if __name__ == "__main__":
    main()
