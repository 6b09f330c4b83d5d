"""Feature and tuning trials of the global model: one raw gbm fit per window, no calibration.

Not part of `make test`. Each window fits `gbm` on the data up to its cutoff and scores the
48 days after it (RMSPE of the point forecasts alone: no champions, intervals or RMSPE factor),
on every n-th store, for each variant side by side:

    python benchmarks/gbm_trials.py --variants "before;default;GBMParams(num_leaves=127)"
        [--store-step 4] [--seeds 18,19,20,21]
        [--windows easter14,season14,check14,easter15,last]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd

from forecast_backtest import STORE_ID_VARIANTS  # this folder: the script's own path
from sfmlops.core import columns
from sfmlops.core.forecasting.backtest import HORIZON_DAYS
from sfmlops.core.forecasting.base import as_future
from sfmlops.core.forecasting.gbm import BLEND, DEFAULT_PARAMS, GBMParams, GlobalGBMForecaster
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services.loading import read_dataset

# Window -> cutoff; each forecasts the 48 days after its cutoff.
WINDOWS = {
    "easter14": "2014-03-09",  # Easter Sunday 2014-04-20
    "spring14": "2014-04-26",
    "season14": "2014-06-13",  # the stand-in of the 48 days after the data
    "check14": "2014-07-31",  # the untouched check
    "easter15": "2015-03-09",  # Easter Sunday 2015-04-05
    "last": "2015-04-26",
}

# The tree settings of the default gbm until the tuning of 2026-12-05: variants measured
# before it keep them, so that their rows still mean what they meant.
_BEFORE_TUNING = GBMParams(num_leaves=63, min_data_in_leaf=100, bagging_fraction=0.4)

VARIANTS: dict[str, GBMParams] = {
    # Raw fits have no backtest: the default is its served blend.
    "default": DEFAULT_PARAMS,
    # One booster: the default gbm until 2026-12-06.
    "single": GBMParams(),
    "blend": BLEND,
    # The blend with a cheaper second booster (fewer rounds at a higher rate).
    "blend_r150": replace(BLEND, member_rounds=150, member_learning_rate=0.15),
    "before_tuning": _BEFORE_TUNING,
    **STORE_ID_VARIANTS,
    # The default until the extended calendar replaced it.
    "before": replace(
        _BEFORE_TUNING,
        excluded_features=(
            "store_recent_level_28",
            "days_into_",
            "days_left_",
            "days_after_promo",
            "days_before_promo",
            "promo_school_holiday",
        ),
    ),
    "extended": replace(
        _BEFORE_TUNING,
        excluded_features=("promo_school_holiday",),
        num_leaves=127,
        min_data_in_leaf=50,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants",
        default="default;extended",
        help="names or GBMParams(...) expressions, separated by ;",
    )
    parser.add_argument("--windows", default=",".join(WINDOWS))
    parser.add_argument("--store-step", type=int, default=4)
    parser.add_argument(
        "--seeds", default="", help="fit each variant once per seed (e.g. 18,19); else its own"
    )
    args = parser.parse_args()
    dataset = read_dataset(ROSSMANN_DIR)
    history, stores = dataset.sales, dataset.stores
    chosen = sorted(history[columns.STORE_ID].unique())[:: args.store_step]
    history = history[history[columns.STORE_ID].isin(chosen)]
    results = []
    for window in args.windows.split(","):
        cutoff = pd.Timestamp(WINDOWS[window])
        seen = history[history[columns.SALES_DATE] <= cutoff]
        target = history[
            (history[columns.SALES_DATE] > cutoff)
            & (history[columns.SALES_DATE] <= cutoff + pd.Timedelta(days=HORIZON_DAYS))
            & history[columns.STORE_ID].isin(seen[columns.STORE_ID].unique())
        ].reset_index(drop=True)
        seeds = [int(seed) for seed in args.seeds.split(",") if seed] or [None]
        for variant, seed in [(v, s) for v in args.variants.split(";") for s in seeds]:
            # A variant is a name above or a `GBMParams(...)` expression (a local trial tool).
            params = VARIANTS.get(variant) or eval(variant, {"GBMParams": GBMParams})
            if seed is not None:
                params = replace(params, seed=seed)
            started = time.perf_counter()
            model = GlobalGBMForecaster(params, calibration_days=0, rmspe_scaling=False)
            model.fit(seen, stores)
            yhat = model.predict(as_future(target))[columns.YHAT].to_numpy()
            actual = target[columns.SALES].to_numpy(dtype=float)
            sold = actual > 0
            rmspe = float(np.sqrt(np.mean(((yhat[sold] - actual[sold]) / actual[sold]) ** 2)))
            row = {
                "window": window,
                "variant": variant,
                "seed": params.seed,
                "rmspe": round(rmspe, 4),
                "seconds": round(time.perf_counter() - started, 1),
                "load": round(os.getloadavg()[0], 1),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
