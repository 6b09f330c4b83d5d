"""Forecasting benchmark: backtest table, `sfmlops train` time and memory, the reference's cost.

Not part of `make test`. Run from the repository root:

    python benchmarks/forecast_backtest.py [--prophet-sample 50] [--reference-sample 20]
        [--train-models gbm] [--skip-train] [--output benchmarks/results/forecast_backtest.json]
    python benchmarks/forecast_backtest.py --season [--variants before,default]
        [--targets season,check,easter,last,data] [--workers 2] [--seeds 18,19,20,21]
        [--store-step 1] [--served-reported] [--save-rows FOLDER]
        --skip-backtest --skip-train --reference-sample 0

0. With `--season`: the season stand-ins of the 48 days after the data, side by side for
   each model variant, as `sfmlops train` + `predict` would score them: trained (backtest,
   champions, calibration, final fit) on the data up to 2014-06-13 and scored on
   2014-06-14..07-31 given the real covariates (the season window, used for choices), and
   trained to 2014-07-31, scored on 2014-08-01..09-17 (the untouched check, never used for a
   choice); with each training's own reported (last rolling) window and its wall time.

1. Backtest on the last 3 x 48-day windows of the bundled data: `gbm` and `seasonal_naive`
   for all stores; `prophet` for a sample of stores (its per-store fits take too long to
   repeat over every store and window here). Champions are picked on windows 1-2 and
   scored on window 3.
2. `sfmlops train` as a user runs it (a real process on a SQLite database loaded with the
   bundled data): wall time and peak memory, per model set given.
3. The reference's procedure: Prophet per store on the last 4 months of open days with
   yearly + weekly seasonality and a 5-fold walk-forward cross-validation, timed on a
   sample of stores and extrapolated to all stores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics, model_selection
from sfmlops.core.forecasting.backtest import (
    CHAMPION,
    HORIZON_DAYS,
    POINT_SCALE,
    ROLLING,
    ForecasterFactory,
    calibration_of,
    champion_scored,
    select_champions,
    summary,
)
from sfmlops.core.forecasting.base import CalibratedForecaster, IntervalCalibration, as_future
from sfmlops.core.forecasting.bundle import ForecastBundle
from sfmlops.core.forecasting.executors import ProcessPoolTaskExecutor
from sfmlops.core.forecasting.gbm import BLEND, DEFAULT_PARAMS, GBMParams, GlobalGBMForecaster
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services.loading import read_dataset

REFERENCE_MONTHS = 4
REFERENCE_FOLDS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument(
        "--prophet-sample", type=int, default=50, help="stores for prophet (0: skip)"
    )
    parser.add_argument("--reference-sample", type=int, default=20, help="stores to time (0: skip)")
    parser.add_argument(
        "--train-models", action="append", default=None, help="model sets to time (repeatable)"
    )
    parser.add_argument("--train-stores", default=None, help="--stores for the train runs")
    parser.add_argument("--season", action="store_true", help="score the season stand-ins")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"among {', '.join(VARIANTS)}"
    )
    parser.add_argument("--store-step", type=int, default=1, help="every n-th store (season)")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes for Prophet's fits (season)"
    )
    parser.add_argument(
        "--targets", default="season,check", help=f"among {', '.join(SEASON_TARGETS)}"
    )
    parser.add_argument(
        "--champion-margins",
        default="",
        help="with --season: also score champions re-picked at these margins (e.g. 0.2,0.3,1)",
    )
    parser.add_argument(
        "--seeds",
        default="",
        help="with --season: train each variant once per gbm seed (e.g. 18,19,20,21)",
    )
    parser.add_argument(
        "--served-reported",
        action="store_true",
        help="with --season: also fit the served gbm (not its backtest stand-in) at the "
        "reported window's cutoff and score it there",
    )
    parser.add_argument(
        "--save-rows",
        type=Path,
        default=None,
        help="with --season: write each training's gbm forecasts (rolling windows, target) "
        "with their covariates and raw (unscaled) forecasts to this folder as parquet",
    )
    parser.add_argument("--skip-backtest", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/forecast_backtest.json")
    )
    args = parser.parse_args()

    results: dict[str, object] = {"machine": machine()}
    dataset = read_dataset(ROSSMANN_DIR)
    history, stores = dataset.sales, dataset.stores
    if args.season:
        results["season"] = season(
            history,
            stores,
            args.variants.split(","),
            args.store_step,
            args.targets.split(","),
            args.workers,
            [float(margin) for margin in args.champion_margins.split(",") if margin],
            [int(seed) for seed in args.seeds.split(",") if seed],
            args.served_reported,
            args.save_rows,
        )
        save(results, args.output)
    if not args.skip_backtest:
        results["backtest"] = backtest(history, stores, args.windows, args.prophet_sample)
        save(results, args.output)
    if args.reference_sample:
        results["reference"] = reference_timing(history, args.reference_sample)
        save(results, args.output)
    if not args.skip_train:
        results["train"] = [
            train_timing(models, args.train_stores) for models in (args.train_models or ["gbm"])
        ]
        save(results, args.output)
    print(json.dumps(results, indent=2, default=str))


def backtest(
    history: pd.DataFrame, stores: pd.DataFrame, windows: int, prophet_sample: int
) -> dict[str, object]:
    started = time.perf_counter()
    report = model_selection.backtest(
        history, stores, ["gbm", "seasonal_naive"], windows=windows, progress=log
    )
    elapsed = time.perf_counter() - started
    out: dict[str, object] = {
        "all_stores": table(report.summary),
        "all_stores_champion_mix": report.champion_mix(),
        "all_stores_seconds": round(elapsed, 1),
    }
    if prophet_sample:
        sample = sorted(history[columns.STORE_ID].unique())[:: max(1, 1115 // prophet_sample)]
        sample = sample[:prophet_sample]
        part = history[history[columns.STORE_ID].isin(sample)]
        started = time.perf_counter()
        prophet = model_selection.backtest(part, stores, ["prophet"], windows=windows, progress=log)
        prophet_seconds = time.perf_counter() - started
        # Three-way champions on the sample, from the all-store backtest of the other models.
        others = report.scored[
            report.scored[columns.STORE_ID].isin(sample)
            & (report.scored[columns.MODEL] != CHAMPION)
        ]
        scored = pd.concat(
            [others, prophet.scored[prophet.scored[columns.MODEL] != CHAMPION]],
            ignore_index=True,
        )
        selection = [w.number for w in report.windows[:-1]]
        champions = select_champions(scored, selection)
        last = report.windows[-1].number
        best = champion_scored(scored[scored[columns.BACKTEST_WINDOW] == last], champions)
        out["sample_stores"] = sample
        out["sample"] = table(summary(pd.concat([scored, best], ignore_index=True)))
        out["sample_champion_mix"] = {
            str(k): int(v) for k, v in champions[columns.MODEL].value_counts().items()
        }
        out["prophet_sample_seconds"] = round(prophet_seconds, 1)
    return out


# The season stand-ins: name -> (label, cutoff). The forecast covers the 48 days after the
# cutoff. `easter` is a spring window with Easter (2015-04-05), where moving holidays show.
SEASON_TARGETS = {
    "season": ("season 2014-06-14..07-31", "2014-06-13"),
    "check": ("check 2014-08-01..09-17 (untouched)", "2014-07-31"),
    "easter": ("easter 2015-03-10..04-26", "2015-03-09"),
    # The data's last 48 days, forecast by the served model as the season windows are (the
    # `data` target scores them by the backtest's stand-in, in its reported window).
    "last": ("last 2015-04-27..06-13", "2015-04-26"),
    # The whole data: no target days, only the training's own (reported) window.
    "data": ("the data's end (no target)", "2015-06-13"),
}


def _gbm(params: GBMParams) -> ForecasterFactory:
    def make(*, calibration: IntervalCalibration | None = None) -> GlobalGBMForecaster:
        return GlobalGBMForecaster(params, calibration=calibration)

    return make


# The tree settings of the default gbm until the tuning of 2026-12-05: variants measured
# before it keep them, so that their rows still mean what they meant.
_BEFORE_TUNING = GBMParams(num_leaves=63, min_data_in_leaf=100, bagging_fraction=0.4)

# The gbm before the extended calendar became the default (it left these features out).
_BEFORE_EXTENDED = replace(
    _BEFORE_TUNING,
    excluded_features=(
        "store_recent_level_28",
        "days_into_",
        "days_left_",
        "days_after_promo",
        "days_before_promo",
        "promo_school_holiday",
    ),
)

# The default gbm from 2026-12-06 to 2026-12-07: `BLEND` with a second booster of 150 rounds
# at 0.15, backtest windows fitting one booster of 170 rounds at 0.15.
_BLEND_R150_BT170 = replace(
    BLEND,
    member_rounds=150,
    member_learning_rate=0.15,
    backtest_rounds=170,
    backtest_learning_rate=0.15,
)

# The default with 255 bins per feature instead of 63, and with the store id split as a
# category (the default for a day on 2026-12-07: smoothed by 100 days, with 255 bins, or
# smoothed by 200); docs/benchmarks.md, "The store id as a category". Variants here and in
# gbm_trials.py.
STORE_ID_VARIANTS: dict[str, GBMParams] = {
    "bins255": replace(DEFAULT_PARAMS, max_bin=255),
    "store_category": replace(DEFAULT_PARAMS, store_as_category=True),
    "store_category_bins255": replace(DEFAULT_PARAMS, store_as_category=True, max_bin=255),
    "store_category_s200": replace(
        DEFAULT_PARAMS, store_as_category=True, category_smoothing=200.0
    ),
}

# Variant -> (gbm settings, season windows in its training). `before`: the default until
# the extended calendar (school-holiday run position, days since a promotion started or
# ended, four-week level) replaced it; `default`: today's default.
VARIANTS: dict[str, tuple[GBMParams, int]] = {
    "before": (_BEFORE_EXTENDED, 0),
    "default": (DEFAULT_PARAMS, 1),
    # One booster: the default gbm until 2026-12-06 (the field defaults of GBMParams).
    "single": (GBMParams(), 1),
    # The whole extended calendar (with the look-ahead promotion days) and 127 leaves of
    # >= 50 days: rejected, it broke on the Easter weeks (docs/benchmarks.md).
    "extended": (
        replace(
            _BEFORE_TUNING,
            excluded_features=("promo_school_holiday",),
            num_leaves=127,
            min_data_in_leaf=50,
        ),
        1,
    ),
    # A new LightGBM bag every 5th round instead of every round: a fifth less training CPU,
    # rejected for its accuracy (docs/benchmarks.md, "Sharded gbm training").
    "bagging5": (replace(_BEFORE_TUNING, bagging_freq=5), 1),
    # The default gbm settings until the tuning of 2026-12-05 (63 leaves of >= 100 days, 40 %
    # of the days per round), and the tuning's rejected larger step (95 leaves of >= 30 days,
    # 70 %: more accurate, but sfmlops train over its 150 s budget).
    "before_tuning": (_BEFORE_TUNING, 1),
    # Two boosters in the served model (backtests fit the first), the second without the day
    # and week of the year, with the promotion x school holiday code: more accurate on the
    # season and check windows, but sfmlops train over its 150 s budget (docs/benchmarks.md).
    "blend": (BLEND, 1),
    # The same blend with a cheaper second booster: fewer rounds at a higher rate.
    "blend_r150": (replace(BLEND, member_rounds=150, member_learning_rate=0.15), 1),
    "blend_r125": (replace(BLEND, member_rounds=125, member_learning_rate=0.2), 1),
    # blend_r150 whose backtest windows fit a cheaper booster (170 rounds at 0.15), so that
    # the served model's second booster costs a training job no more time: the default since
    # 2026-12-06.
    "blend_r150_bt170": (_BLEND_R150_BT170, 1),
    # The default since 2026-12-07: `BLEND` of 95 leaves (a second booster of 250 rounds at
    # 0.1), the backtest's booster as blend_r150_bt170's (63 leaves, 170 rounds at 0.15).
    "blend_l95_r250": (DEFAULT_PARAMS, 1),
    "leaves95": (GBMParams(num_leaves=95), 1),
    **{name: (params, 1) for name, params in STORE_ID_VARIANTS.items()},
    # The single booster with another seed: how far a choice's gain is from what a seed moves.
    "seed18": (GBMParams(seed=18), 1),
    # Prophet: alone (each store's own Prophet, as `sfmlops train --models prophet`), and as a
    # third candidate beside the default set (VARIANT_MODELS).
    "prophet": (DEFAULT_PARAMS, 1),
    "with_prophet": (DEFAULT_PARAMS, 1),
}
# The model set of a variant that does not train the default gbm + seasonal_naive.
VARIANT_MODELS: dict[str, tuple[str, ...]] = {
    "prophet": ("prophet",),
    "with_prophet": ("gbm", "seasonal_naive", "prophet"),
}


def season(
    history: pd.DataFrame,
    stores: pd.DataFrame,
    variants: list[str],
    store_step: int,
    targets: list[str],
    workers: int = 1,
    champion_margins: Sequence[float] = (),
    seeds: Sequence[int] = (),
    served_reported: bool = False,
    save_rows: Path | None = None,
) -> list[dict[str, object]]:
    """Train each variant to each season cutoff and score the 48 days after it.

    `workers` > 1 fits Prophet's chunks of stores in that many processes (gbm's shards too,
    when there are several). Each of `champion_margins` re-picks the champions at that
    margin (`select_champions`) from the same training's backtest and scores them on the
    target and on the training's reported window: what another margin would have made of
    the same models, without training them again. Each of `seeds` trains every variant
    again with that gbm seed (a blend's later members take the seeds after it): how far a
    variant's gain is from what a seed moves. None: each variant's own seed.
    `served_reported` scores the served gbm on the training's reported window
    (`served_scores`); `save_rows` keeps each training's gbm forecasts (`saved_rows`).
    """
    executor = ProcessPoolTaskExecutor(workers) if workers > 1 else None
    chosen = sorted(history[columns.STORE_ID].unique())[::store_step]
    history = history[history[columns.STORE_ID].isin(chosen)]
    rows: list[dict[str, object]] = []
    for label, cutoff_day in (SEASON_TARGETS[name] for name in targets):
        cutoff = pd.Timestamp(cutoff_day)
        seen = history[history[columns.SALES_DATE] <= cutoff]
        target = history[
            (history[columns.SALES_DATE] > cutoff)
            & (history[columns.SALES_DATE] <= cutoff + pd.Timedelta(days=HORIZON_DAYS))
            & history[columns.STORE_ID].isin(seen[columns.STORE_ID].unique())
        ].reset_index(drop=True)
        for variant, seed in [(v, s) for v in variants for s in (seeds or [None])]:
            params, season_windows = VARIANTS[variant]
            if seed is not None:
                params = replace(params, seed=seed)
            log(f"{label}: training {variant}, seed {params.seed}")
            started = time.perf_counter()
            cpu_started = time.process_time()
            children_started = _children_cpu()
            bundle, report = model_selection.train(
                seen,
                stores,
                VARIANT_MODELS.get(variant, ("gbm", "seasonal_naive")),
                windows=3,
                season_windows=season_windows,
                executor=executor,
                progress=log,
                factories={"gbm": _gbm(params)},
            )
            seconds = time.perf_counter() - started
            scored = {name: float("nan") for name in SCORES}  # nothing after the data's end
            by_model: dict[str, float] = {}
            margins = (
                margin_scores(bundle, report, target, champion_margins) if champion_margins else {}
            )
            if save_rows is not None:
                saved_rows(seen, bundle, report, target).to_parquet(
                    save_rows / f"{label.split()[0]}-{variant}-{params.seed}.parquet"
                )
            served = served_scores(seen, stores, report, _gbm(params)) if served_reported else {}
            if not target.empty:
                actual = target[columns.SALES].to_numpy(dtype=float)
                forecast = bundle.predict(as_future(target)).frame
                forecast[metrics.ACTUAL] = actual
                scored = metrics.accuracy(forecast)
                # Each model of a set alone (every series, no champions), as trained for it:
                # Prophet scored inside `with_prophet` is `sfmlops train --models prophet`'s
                # model, without fitting it twice.
                if len(bundle.models) > 1:
                    for name, model in bundle.models.items():
                        alone = model.predict(as_future(target)).assign(**{metrics.ACTUAL: actual})
                        by_model |= {
                            f"{name}_{score}": round(value, 4)
                            for score, value in metrics.accuracy(alone).items()
                            if score in SCORES
                        }
            reported = report.reported().set_index(columns.MODEL)
            rows.append(
                {
                    "target": label,
                    "variant": variant,
                    "seed": params.seed,
                    "stores": len(chosen),
                    **{name: round(scored[name], 4) for name in SCORES},
                    **by_model,
                    "reported_window": report.windows[-1].describe(),
                    **{
                        f"reported_{name}": round(float(reported.at[CHAMPION, name]), 4)
                        for name in SCORES
                    },
                    "train_seconds": round(seconds, 1),
                    # CPU time says how much work the training is, whatever else ran.
                    "train_cpu_seconds": round(
                        time.process_time() - cpu_started + _children_cpu() - children_started, 1
                    ),
                    "champion_mix": bundle.metadata["champion_mix"],
                    **margins,
                    **served,
                    "load_average": round(os.getloadavg()[0], 1),
                }
            )
            log(str(rows[-1]))
    return rows


SCORES = (metrics.RMSPE, metrics.COVERAGE_80, metrics.COVERAGE_95)


def margin_scores(
    bundle: ForecastBundle,
    report: model_selection.BacktestReport,
    target: pd.DataFrame,
    margins: Sequence[float],
) -> dict[str, object]:
    """RMSPE of the champions re-picked at each margin: on the target (picked on every
    rolling window, as the bundle's) and on the reported window (picked on the rolling
    windows before it, as the report's); with how many series each margin gives each model."""
    scored = report.scored[report.scored[columns.MODEL] != CHAMPION]
    rolling = [w.number for w in report.windows if w.kind == ROLLING]
    reported = rolling[-1]
    actual = target[columns.SALES].to_numpy(dtype=float)
    alone = {
        name: model.predict(as_future(target)).assign(**{metrics.ACTUAL: actual})
        for name, model in bundle.models.items()
    }
    found: dict[str, object] = {}
    for margin in margins:
        champions = select_champions(scored, rolling, margin)
        model_of = champions.set_index(columns.STORE_ID)[columns.MODEL]
        early = select_champions(scored, rolling[:-1] or rolling, margin)
        on_reported = champion_scored(scored[scored[columns.BACKTEST_WINDOW] == reported], early)
        picked: dict[str, object] = {
            "reported_rmspe": round(metrics.accuracy(on_reported)[metrics.RMSPE], 4),
            "champion_mix": {str(k): int(v) for k, v in model_of.value_counts().items()},
        }
        found[f"margin_{margin:g}"] = picked
        if not target.empty:
            # A store without a champion (no rolling-window rows) gets the most common one.
            chosen = target[columns.STORE_ID].map(model_of).fillna(model_of.mode()[0]).to_numpy()
            forecast = pd.concat([alone[name][chosen == name] for name in alone], ignore_index=True)
            picked["target_rmspe"] = round(metrics.accuracy(forecast)[metrics.RMSPE], 4)
    return found


def saved_rows(
    seen: pd.DataFrame,
    bundle: ForecastBundle,
    report: model_selection.BacktestReport,
    target: pd.DataFrame,
) -> pd.DataFrame:
    """The gbm's rolling-window rows and its target rows, each with the day's covariates,
    the raw forecast (before the RMSPE factor) and the actual; `backtest_window` 0 is the
    target (forecast by the final model)."""
    scored = report.scored[report.scored[columns.MODEL] == "gbm"]
    rolling = [w.number for w in report.windows if w.kind == ROLLING]
    rows = scored[scored[columns.BACKTEST_WINDOW].isin(rolling)]
    windows = pd.DataFrame(
        {
            columns.BACKTEST_WINDOW: rows[columns.BACKTEST_WINDOW].to_numpy(),
            columns.STORE_ID: rows[columns.STORE_ID].to_numpy(),
            columns.SALES_DATE: rows[columns.SALES_DATE].to_numpy(),
            columns.HORIZON_DAYS: rows[columns.HORIZON_DAYS].to_numpy(),
            "raw": rows[columns.YHAT].to_numpy(dtype=float)
            / rows[POINT_SCALE].to_numpy(dtype=float),
            metrics.ACTUAL: rows[metrics.ACTUAL].to_numpy(dtype=float),
        }
    )
    parts = [windows]
    if not target.empty:
        model = bundle.models["gbm"]
        future = as_future(target)
        parts.append(
            pd.DataFrame(
                {
                    columns.BACKTEST_WINDOW: 0,
                    columns.STORE_ID: future[columns.STORE_ID].to_numpy(),
                    columns.SALES_DATE: future[columns.SALES_DATE].to_numpy(),
                    columns.HORIZON_DAYS: (future[columns.SALES_DATE] - model.cutoff_).dt.days,
                    "raw": model._predict_point(future),
                    metrics.ACTUAL: target[columns.SALES].to_numpy(dtype=float),
                }
            )
        )
    saved = pd.concat(parts, ignore_index=True)
    covariates = seen if target.empty else pd.concat([seen, target], ignore_index=True)
    return saved.merge(
        covariates[
            [
                columns.STORE_ID,
                columns.SALES_DATE,
                columns.OPEN,
                columns.PROMO,
                columns.STATE_HOLIDAY,
                columns.SCHOOL_HOLIDAY,
            ]
        ],
        on=[columns.STORE_ID, columns.SALES_DATE],
        how="left",
    )


def served_scores(
    seen: pd.DataFrame,
    stores: pd.DataFrame,
    report: model_selection.BacktestReport,
    make: ForecasterFactory,
) -> dict[str, object]:
    """The served gbm (the factory's model itself, not its backtest stand-in) fitted at the
    reported window's cutoff, calibrated on the window before it as the backtest's stand-in
    was, scored on the reported window beside the stand-in's own scores there."""
    scored = report.scored[report.scored[columns.MODEL] == "gbm"]
    rolling = [w for w in report.windows if w.kind == ROLLING]
    window = rolling[-1]
    before = scored[scored[columns.BACKTEST_WINDOW] == rolling[-2].number]
    stand_in = scored[scored[columns.BACKTEST_WINDOW] == window.number]
    target = seen[
        (seen[columns.SALES_DATE] >= window.start)
        & (seen[columns.SALES_DATE] <= window.end)
        & seen[columns.STORE_ID].isin(
            seen.loc[seen[columns.SALES_DATE] <= window.cutoff, columns.STORE_ID].unique()
        )
    ].reset_index(drop=True)
    found: dict[str, object] = {
        "stand_in_reported": {
            name: round(value, 4)
            for name, value in metrics.accuracy(stand_in).items()
            if name in SCORES
        }
    }
    log(f"fitting the served gbm at {window.cutoff.date()}")
    started = time.process_time()
    served = cast(CalibratedForecaster, make(calibration=calibration_of(before)))
    served.fit(seen[seen[columns.SALES_DATE] <= window.cutoff], stores)
    found["served_fit_cpu_seconds"] = round(time.process_time() - started, 1)
    forecast = served.predict(as_future(target))
    forecast[metrics.ACTUAL] = target[columns.SALES].to_numpy(dtype=float)
    found["served_reported"] = {
        name: round(value, 4)
        for name, value in metrics.accuracy(forecast).items()
        if name in SCORES
    }
    return found


def _children_cpu() -> float:
    """CPU seconds of this process's finished worker processes (Prophet's pools)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reference_timing(history: pd.DataFrame, sample_size: int) -> dict[str, object]:
    """Prophet per store on the last 4 months with a 5-fold walk-forward CV, timed."""
    from prophet import Prophet  # noqa: PLC0415
    from prophet.diagnostics import cross_validation  # noqa: PLC0415

    logging.getLogger("cmdstanpy").disabled = True
    stores = sorted(history[columns.STORE_ID].unique())
    sample = stores[:: max(1, len(stores) // sample_size)][:sample_size]
    last = history[columns.SALES_DATE].max()
    start = last - pd.DateOffset(months=REFERENCE_MONTHS)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for store in sample:
            rows = history[
                (history[columns.STORE_ID] == store)
                & (history[columns.SALES_DATE] > start)
                & (history[columns.OPEN] == 1)
            ]
            frame = pd.DataFrame({"ds": rows[columns.SALES_DATE], "y": rows[columns.SALES]})
            model = Prophet(yearly_seasonality=True, weekly_seasonality=True)
            model.fit(frame, output_dir=folder)
            cross_validation(
                model,
                horizon="7 days",
                period="7 days",
                initial=f"{(frame['ds'].max() - frame['ds'].min()).days - 7 * REFERENCE_FOLDS} days",
                disable_tqdm=True,
            )
    seconds = time.perf_counter() - started
    return {
        "stores_timed": len(sample),
        "seconds": round(seconds, 1),
        "seconds_per_store": round(seconds / len(sample), 2),
        "extrapolated_seconds_all_stores": round(seconds / len(sample) * len(stores), 0),
    }


def train_timing(models: str, stores: str | None) -> dict[str, object]:
    """`sfmlops train --models MODELS` in a real process on a fresh SQLite database."""
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SFMLOPS_")}
        env["SFMLOPS_HOME"] = home
        command = str(Path(sys.executable).with_name("sfmlops"))
        subprocess.run([command, "load-data"], env=env, check=True, capture_output=True)
        args = [command, "train", "--models", models]
        if stores:
            args += ["--stores", stores]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()
        started = time.perf_counter()
        result = subprocess.run(args, env=env, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak = max(after.ru_maxrss, before.ru_maxrss)
    log(result.stdout)
    return {
        "command": " ".join(["sfmlops", *args[1:]]),
        "seconds": round(seconds, 1),
        # CPU time says how much work the job is, whatever else ran on the machine.
        "cpu_seconds": round(
            after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1
        ),
        "load_average_before": [round(value, 2) for value in load],
        # ru_maxrss is the largest child so far (KiB on Linux); load-data ran before.
        "peak_memory_mib": round(peak / 1024, 0),
        "output_tail": result.stdout.strip().splitlines()[-4:],
    }


def table(frame: pd.DataFrame) -> list[dict[str, object]]:
    names = [
        columns.MODEL,
        columns.BACKTEST_WINDOW,
        metrics.RMSPE,
        metrics.MAPE,
        metrics.BIAS,
        metrics.COVERAGE_80,
        metrics.COVERAGE_95,
        metrics.DAYS,
    ]
    rounded = frame[names].copy()
    for name in (metrics.RMSPE, metrics.MAPE, metrics.COVERAGE_80, metrics.COVERAGE_95):
        rounded[name] = rounded[name].astype(float).round(4)
    rounded[metrics.BIAS] = rounded[metrics.BIAS].astype(float).round(1)
    records: list[dict[str, object]] = rounded.to_dict(orient="records")
    return records


def machine() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_at_start": os.getloadavg(),
        "numpy": np.__version__,
    }


def save(results: dict[str, object], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def alternated(
    rounds: int, variants: Sequence[str], measure: Callable[[str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """`measure(variant)` for every variant in turn, `rounds` times (the variants alternate,
    so a change of the machine's load falls on all of them); each run logged with its round."""
    runs = []
    for round_number in range(1, rounds + 1):
        for variant in variants:
            run = measure(variant)
            run["round"] = round_number
            log(str(run))
            runs.append(run)
    return runs


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A Markdown table: the first column left-aligned, the others right-aligned."""
    print("| " + " | ".join(headers) + " |")
    print("| --- |" + " ---: |" * (len(headers) - 1))
    for row in rows:
        print("| " + " | ".join(str(value) for value in row) + " |")


if __name__ == "__main__":
    main()
