"""The RMSPE factor: one `sfmlops train` pipeline per target, scored with each way of learning it.

Not part of `make test`. Run from the repository root:

    python benchmarks/rmspe_factor.py --targets easter,season,check [--store-step 1]

Each target (`forecast_backtest.SEASON_TARGETS`) trains the default pipeline (backtest,
champions, calibration, final fit) on the data up to its cutoff, then scores the 48 days
after it once per way, changing only the factor on point forecasts learnt from the rolling
windows' errors: `clipped N` (forecast/actual ratios clipped to [1/N, N] first; today's N
is `base.SCALE_RATIO_LIMIT`), `unclipped` (the factor before: every ratio as it is) and
`none` (no factor). Intervals are recalibrated around each. The backtest windows' own models use
today's factor in all three, so the champions are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd

from forecast_backtest import SEASON_TARGETS  # this folder: the script's own path
from sfmlops.core import columns
from sfmlops.core.forecasting import base, metrics, model_selection
from sfmlops.core.forecasting.backtest import (
    CHAMPION,
    HORIZON_DAYS,
    POINT_SCALE,
    ROLLING,
    calibration_of,
)
from sfmlops.core.forecasting.base import IntervalCalibration, as_future
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services.loading import read_dataset

SCORES = (metrics.RMSPE, metrics.COVERAGE_80, metrics.COVERAGE_95)
# How the factor is learnt: ratios clipped to a limit (today's is `base.SCALE_RATIO_LIMIT`),
# every ratio as it is (the factor before), or no factor.
LIMITS = {"clipped 2": 2.0, "clipped 3": 3.0, "clipped 5": 5.0, "clipped 10": 10.0}
FACTORS = (*LIMITS, "unclipped", "none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="easter,season,check")
    parser.add_argument("--store-step", type=int, default=1, help="every n-th store")
    args = parser.parse_args()
    dataset = read_dataset(ROSSMANN_DIR)
    sales = dataset.sales
    chosen = sorted(sales[columns.STORE_ID].unique())[:: args.store_step]
    sales = sales[sales[columns.STORE_ID].isin(chosen)]
    for name in args.targets.split(","):
        for row in score_target(sales, dataset.stores, name):
            print(json.dumps(row), flush=True)


def score_target(history: pd.DataFrame, stores: pd.DataFrame, name: str) -> list[dict[str, object]]:
    label, cutoff_day = SEASON_TARGETS[name]
    cutoff = pd.Timestamp(cutoff_day)
    seen = history[history[columns.SALES_DATE] <= cutoff]
    target = history[
        (history[columns.SALES_DATE] > cutoff)
        & (history[columns.SALES_DATE] <= cutoff + pd.Timedelta(days=HORIZON_DAYS))
        & history[columns.STORE_ID].isin(seen[columns.STORE_ID].unique())
    ].reset_index(drop=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    bundle, report = model_selection.train(
        seen, stores, ["gbm", "seasonal_naive"], windows=3, season_windows=1
    )
    timing = {
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_cpu_seconds": round(time.process_time() - cpu_started, 1),
        "load_average": round(os.getloadavg()[0], 1),
    }
    reported = report.reported().set_index(columns.MODEL)
    rolling = [w.number for w in report.windows if w.kind == ROLLING]
    scored = report.scored
    errors = {
        model: scored[
            (scored[columns.MODEL] == model) & scored[columns.BACKTEST_WINDOW].isin(rolling)
        ]
        for model in bundle.models
    }
    rows = []
    for factor in FACTORS:
        for model, forecaster in bundle.models.items():
            forecaster.calibration_ = _calibration(errors[model], factor)
        forecast = bundle.predict(as_future(target)).frame
        forecast[metrics.ACTUAL] = target[columns.SALES].to_numpy(dtype=float)
        accuracy = metrics.accuracy(forecast)
        rows.append(
            {
                "target": label,
                "stores": int(target[columns.STORE_ID].nunique()),
                "factor": factor,
                "scales": {
                    model: round(float(f.calibration_.scale), 4)
                    for model, f in bundle.models.items()
                    if f.calibration_ is not None
                },
                **{score: round(accuracy[score], 4) for score in SCORES},
                "reported_window": report.windows[-1].describe(),
                "reported_rmspe": round(float(reported.at[CHAMPION, metrics.RMSPE]), 4),
                "champion_mix": {
                    str(k): int(v)
                    for k, v in bundle.champions[columns.MODEL].value_counts().items()
                },
                **timing,
            }
        )
    return rows


def _calibration(errors: pd.DataFrame, factor: str) -> IntervalCalibration:
    if factor in LIMITS or factor == "unclipped":
        limit = base.SCALE_RATIO_LIMIT
        base.SCALE_RATIO_LIMIT = LIMITS.get(factor, np.inf)
        try:
            return calibration_of(errors)
        finally:
            base.SCALE_RATIO_LIMIT = limit
    return IntervalCalibration.of_scored(
        errors[columns.YHAT].to_numpy(dtype=float) / errors[POINT_SCALE].to_numpy(dtype=float),
        errors[metrics.ACTUAL].to_numpy(dtype=float),
        errors[columns.HORIZON_DAYS].to_numpy(),
        rescale=False,
    )


if __name__ == "__main__":
    main()
