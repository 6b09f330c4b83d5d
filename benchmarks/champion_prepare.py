"""Benchmark: preparing a champion as the API does at start-up, predicting every series'
calibrated horizon against loading the horizon its training job saved.

In process, on a registered bundle folder (HOME/models/versions/N of an embedded home):
1. load the bundle (`ForecastBundle.load`);
2. compute every series' horizon as `sfmlops train` now does before registering, and save
   it into a scratch copy (`HorizonForecasts.save`): what training pays for it;
3. `--rounds` times, alternately: `serving.prepare` predicting every series (a bundle saved
   without the horizon), then `HorizonForecasts.load` and `prepare(earlier=...)`. Both must
   serve the same default bodies and horizon arrays (checked here).

Wall and CPU seconds (`time.process_time`) of each; no plan (every covariate derived).

    PYTHONPATH=src .venv/bin/python benchmarks/champion_prepare.py --bundle HOME/models/versions/1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sfmlops.core.forecasting.bundle import ForecastBundle
from sfmlops.services.api import serving


def timed(call: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, {
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="a bundle folder")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    figures: dict[str, Any] = {"load_average_before": os.getloadavg()}
    bundle, figures["bundle_load"] = timed(
        lambda: ForecastBundle.load(args.bundle, signing_key=None)
    )
    figures["series"] = len(bundle.champions)
    horizon, figures["training_computes_horizon"] = timed(
        lambda: serving.horizon_forecasts(bundle, {})
    )
    scratch = Path(tempfile.mkdtemp(prefix="sfmlops-prepare-"))
    try:
        _, figures["training_saves_horizon"] = timed(lambda: horizon.save(scratch))
        figures["horizon_file_mib"] = round(
            (scratch / serving.HORIZON_FILE).stat().st_size / 2**20, 1
        )
        start = serving.first_forecast_date(bundle)
        now = dt.datetime.now(dt.UTC)

        def predicting() -> serving.ServedModel:
            return serving.prepare(bundle, "1", "run", now, start)

        def loading() -> serving.ServedModel:
            saved = serving.HorizonForecasts.load(scratch)
            return serving.prepare(bundle, "1", "run", now, start, earlier=saved)

        figures["prepare_predicting"], figures["prepare_with_saved_horizon"] = [], []
        for _ in range(args.rounds):
            fresh, seconds = timed(predicting)
            figures["prepare_predicting"].append(seconds)
            kept, seconds = timed(loading)
            figures["prepare_with_saved_horizon"].append(seconds)
            if kept.default_bodies != fresh.default_bodies or not np.array_equal(
                kept.horizon_forecasts.values, fresh.horizon_forecasts.values
            ):
                raise RuntimeError("the saved horizon serves other forecasts than predicting")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    figures["load_average_after"] = os.getloadavg()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
