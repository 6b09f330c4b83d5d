"""The models by name, as the CLI and the training pipeline choose them."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import replace

from sfmlops.core.forecasting.base import CalibratedForecaster, IntervalCalibration
from sfmlops.core.forecasting.executors import Executor
from sfmlops.core.forecasting.gbm import DEFAULT_PARAMS, GlobalGBMForecaster
from sfmlops.core.forecasting.naive import SeasonalNaiveForecaster
from sfmlops.core.forecasting.prophet_model import ProphetForecaster

MODEL_CLASSES: dict[str, type[CalibratedForecaster]] = {
    GlobalGBMForecaster.name: GlobalGBMForecaster,
    ProphetForecaster.name: ProphetForecaster,
    SeasonalNaiveForecaster.name: SeasonalNaiveForecaster,
}
MODEL_NAMES = tuple(MODEL_CLASSES)
# Prophet is a choice, not a default: on the backtests (docs/benchmarks.md) it is champion of
# few stores, does not lower the champions' RMSPE on the reported window, and costs ~10x gbm's
# training time.
DEFAULT_MODELS = (GlobalGBMForecaster.name, SeasonalNaiveForecaster.name)
# Models that need an optional extra to fit and to forecast: name -> the package it imports.
MODEL_EXTRAS = {ProphetForecaster.name: "prophet"}


class UnknownModelError(ValueError):
    """A model name that is not one of `MODEL_NAMES`."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")


def model_set(names: Iterable[str]) -> tuple[str, ...]:
    """A chosen set of model names, checked: stripped, in order, each once.

    Raises:
        UnknownModelError: A name that is not one of `MODEL_NAMES` (the first such name).
        ValueError: No name at all.
    """
    chosen = tuple(dict.fromkeys(name.strip() for name in names if name.strip()))
    for name in chosen:
        forecaster_class(name)
    if not chosen:
        raise ValueError(f"choose at least one model among {', '.join(MODEL_NAMES)}")
    return chosen


def model_installed(name: str) -> bool:
    """Whether this process can fit and forecast with model `name` (its extra is installed;
    the API and dashboard images carry no Prophet)."""
    package = MODEL_EXTRAS.get(name)
    return package is None or importlib.util.find_spec(package) is not None


def forecaster_class(name: str) -> type[CalibratedForecaster]:
    """The class of the model called `name`."""
    try:
        return MODEL_CLASSES[name]
    except KeyError:
        raise UnknownModelError(name) from None


def make_forecaster(
    name: str,
    executor: Executor | None = None,
    calibration: IntervalCalibration | None = None,
    *,
    shard_series: int | None = None,
) -> CalibratedForecaster:
    """An unfitted forecaster with default settings; models that fan out (Prophet's chunks of
    series, gbm's shards) get the executor.

    Args:
        shard_series: Most series one gbm booster is fitted on (`GBMParams.shard_series`);
            None: the default. Other models ignore it.
    """
    cls = forecaster_class(name)
    if cls is ProphetForecaster:
        return ProphetForecaster(executor=executor, calibration=calibration)
    if cls is GlobalGBMForecaster:
        params = (
            DEFAULT_PARAMS
            if shard_series is None
            else replace(DEFAULT_PARAMS, shard_series=shard_series)
        )
        return GlobalGBMForecaster(params, executor=executor, calibration=calibration)
    return cls(calibration=calibration)
