"""Pipelines: the batch forecast written into the database, and the weekly retrain before it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Engine

from sfmlops.adapters.db import forecast_records, issued_forecasts, plan_records
from sfmlops.adapters.mlflow_registry import connect
from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.core.forecasting.bundle import ForecastBundle, future_days
from sfmlops.core.forecasting.plan import apply_plan
from sfmlops.services import status
from sfmlops.services.model_training import champion_bundle, version_folder
from sfmlops.settings import Settings

DEFAULT_FORECAST_DAYS = 7
# Issued forecasts whose covariates came from a plan known in advance.
PLAN_COVARIATE_SOURCE = "plan"


class NothingToForecastError(RuntimeError):
    """No champion yet, no sales to date the forecast from, or an as-of date the model predates."""


@dataclass(frozen=True)
class BatchForecast:
    """What `forecast_next_days` wrote."""

    model_version: str
    start: dt.date
    end: dt.date
    series: int
    rows: int
    assumptions: list[str]


def forecast_next_days(
    settings: Settings,
    engine: Engine,
    days: int = DEFAULT_FORECAST_DAYS,
    model_version: str | None = None,
    plan: pd.DataFrame | None = None,
) -> BatchForecast:
    """Forecast `days` days after the as-of date for every series into `forecasts`.

    The rows are tagged with the model's version and written in one transaction, so a
    reader sees the whole run or none of it; the same transaction keeps them as issued
    (`issued_forecasts`), to be scored when their days' actuals land.

    Args:
        model_version: The version to forecast with (e.g. the one the API serves);
            default: the current champion.
        plan: Covariates known in advance (`store_id`, `product_id`, `sales_date` and any of
            `open`, `promo`, `state_holiday`, `school_holiday`); the days and series it
            covers are forecast with them and kept with the covariate source "plan", the
            others with the bundle's assumptions ("default"). Default: the stored plan
            (`sfmlops load-plan`, `POST /v1/plan`), per store and day.

    Raises:
        NothingToForecastError: No champion model (or no such version), no as-of date, or
            an as-of date before the model's training data ends.
    """
    if not 1 <= days <= 366:
        raise ValueError(f"days must be between 1 and 366, got {days}")
    try:
        if model_version is None:
            version, bundle = champion_bundle(settings)
        else:
            version = model_version
            bundle = ForecastBundle.load(
                version_folder(settings, connect(settings), version),
                signing_key=settings.signing_key,
            )
    except LookupError as error:
        raise NothingToForecastError(str(error)) from error

    with engine.connect() as connection:
        as_of = status.as_of_date(settings, connection)
    if as_of is None:
        raise NothingToForecastError("no sales in the database: run `sfmlops load-data` first")
    start = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    if start <= bundle.last_date:
        raise NothingToForecastError(
            f"the as-of date {as_of} is before the champion's training data ends "
            f"({bundle.last_date.date()}); forecasts start after that"
        )
    future = future_days(bundle.series, start, days)
    sources = pd.Series(issued_forecasts.DEFAULT_COVARIATE_SOURCE, index=future.index)
    if plan is not None:
        keys = [columns.STORE_ID, columns.PRODUCT_ID, columns.SALES_DATE]
        future = future.merge(plan.assign(_planned=True), on=keys, how="left")
        sources = sources.where(future.pop("_planned").isna(), PLAN_COVARIATE_SOURCE)
    else:
        with engine.connect() as connection:
            stored = plan_records.read_plan(
                connection, since=start.date(), until=(start + pd.Timedelta(days=days - 1)).date()
            )
        future, planned = apply_plan(future, stored)
        sources = sources.where(~planned.any(axis=1), PLAN_COVARIATE_SOURCE)
    forecast = bundle.predict(future)
    issued = forecast.frame.assign(**{issued_forecasts.COVARIATE_SOURCE: sources.to_numpy()})
    created_at = dt.datetime.now(dt.UTC)
    with engine.begin() as connection:
        rows = forecast_records.write_forecasts(connection, forecast.frame, version, created_at)
        issued_forecasts.record_issued(
            connection,
            with_backtest_rmspe(issued, bundle),
            version,
            issue_date=start.date(),
            issued_by="pipeline",
        )
    end = start + pd.Timedelta(days=days - 1)
    return BatchForecast(
        model_version=version,
        start=start.date(),
        end=end.date(),
        series=len(bundle.series),
        rows=rows,
        assumptions=forecast.assumptions,
    )


def refresh_for_champion(
    settings: Settings, engine: Engine, version: str
) -> BatchForecast | NothingToForecastError:
    """Rewrite the precomputed forecasts (`GET /v1/forecasts/latest`) with a new champion,
    so they never keep serving the version it replaced.

    Returns:
        What was written, or why nothing could be (e.g. no sales yet to date it from): a
        training run succeeds whether or not there is anything to forecast yet.
    """
    try:
        return forecast_next_days(settings, engine, model_version=version)
    except NothingToForecastError as error:
        return error


def with_backtest_rmspe(frame: pd.DataFrame, bundle: ForecastBundle) -> pd.DataFrame:
    """`frame` with each series' backtest RMSPE in `bundle` (`issued_forecasts.BACKTEST_RMSPE`)."""
    backtests = bundle.champions[[columns.STORE_ID, columns.PRODUCT_ID, metrics.RMSPE]].rename(
        columns={metrics.RMSPE: issued_forecasts.BACKTEST_RMSPE}
    )
    return frame.merge(backtests, on=[columns.STORE_ID, columns.PRODUCT_ID], how="left")
