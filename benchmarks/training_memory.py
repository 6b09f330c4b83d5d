"""Peak RSS of the phases of a full training job after its fits, on a loaded HOME's history.

Not part of `make test`. Run from the repository root:

    PYTHONPATH=src python benchmarks/training_memory.py --home HOME [--reports DIR]

HOME is an `SFMLOPS_HOME` loaded by `sfmlops load-data` (SQLite), e.g. the 10k series of
`sfmlops synth --stores 1000 --products 10 --days 365`. The job is `model_selection.train` of
the default models' names with seasonal_naive fitted in place of each (the scored rows, the
champion selection and the report have the shapes of the default training's, without the
gbm's fitting time), then `backtest_reports.write_report`. The process RSS is sampled every
10 ms; each phase prints its start and end (seconds since the job started), the RSS when it
started and its peak. Run it with `PYTHONPATH=REVISION/src` to compare revisions.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import sqlalchemy

from sfmlops.core.forecasting import backtest, metrics, model_selection
from sfmlops.core.forecasting.models import DEFAULT_MODELS
from sfmlops.services import backtest_reports, training_data

MIB = 2**20
# The phases measured: module and function name (as the job calls them).
PHASES: list[tuple[ModuleType, str]] = [
    (model_selection, "run_backtest"),
    (model_selection, "select_champions"),
    (model_selection, "summary"),
    (model_selection, "calibration_of"),
    (backtest_reports, "write_report"),
    (metrics, "accuracy_by"),
]


class Sampler:
    """This process's RSS every 10 ms in a thread, and the phases' start and end times."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.samples: list[tuple[float, int]] = []
        self.phases: list[tuple[str, float, float, int]] = []
        self.running = True
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while self.running:
            self.samples.append((time.perf_counter(), self.process.memory_info().rss))
            time.sleep(0.01)

    def wrap(self, module: ModuleType, name: str) -> None:
        """Record every call of `module.name` (as the job reaches it through `module`)."""
        original: Callable[..., Any] = getattr(module, name)

        @functools.wraps(original)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            before = self.process.memory_info().rss
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                label = f"{module.__name__.rsplit('.', 1)[-1]}.{name}"
                self.phases.append((label, started, time.perf_counter(), before))

        setattr(module, name, recorded)

    def peak(self, start: float, end: float, floor: int) -> int:
        return max((rss for at, rss in self.samples if start <= at <= end), default=floor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a loaded SFMLOPS_HOME")
    parser.add_argument("--reports", type=Path, default=None, help="where the report goes")
    args = parser.parse_args()
    engine = sqlalchemy.create_engine(f"sqlite:///{args.home / 'sfmlops.db'}")
    data = training_data.read_training_data(engine)
    sampler = Sampler()
    print(
        f"history: {len(data.history):,} rows, RSS {sampler.process.memory_info().rss // MIB} MiB"
    )
    for module, name in PHASES:
        sampler.wrap(module, name)
    naive = {name: model_selection.factory_of("seasonal_naive", None) for name in DEFAULT_MODELS}
    started = time.perf_counter()
    _, report = model_selection.train(
        data.history, data.stores, list(naive), season_windows=backtest.SEASON_WINDOWS,
        factories=naive,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        backtest_reports.write_report(report, args.reports or Path(scratch), "train")
    sampler.running = False
    print(f"scored rows: {len(report.scored):,}")
    for label, start, end, before in sampler.phases:
        peak = sampler.peak(start, end, before)
        print(
            f"{label:32s} {start - started:7.1f}-{end - started:7.1f} s  RSS before "
            f"{before // MIB:6,} MiB, peak {peak // MIB:6,} MiB (+{(peak - before) // MIB:,})"
        )
    print(f"peak RSS of the job: {max(rss for _, rss in sampler.samples) // MIB:,} MiB")


if __name__ == "__main__":
    main()
