"""The champion as the API serves it, and forecasts for API requests.

`prepare` turns a loaded bundle into a `ServedModel` holding every series' forecast for the
whole calibrated horizon (`CALIBRATED_HORIZON_DAYS` days after the training history, both
intervals, the covariates used) in arrays, and the default horizon pre-serialised, so the
common GET is a dictionary lookup and any other start and length within the horizon is a
slice. `forecast` answers a batch: slices where it can, the rest (caller covariates, days
beyond the horizon) predicted with one `predict` call. A store whose series are products
(no `total` series) also has its total: the sum over its products. Results are JSON bytes
in the shape of the contract's forecast object (`schemas.SeriesForecast`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sfmlops.adapters.db.issued_forecasts import BACKTEST_RMSPE, COVARIATE_SOURCE
from sfmlops.adapters.mlflow_registry import MODEL_NAME
from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.core.forecasting.backtest import CHAMPION as CHAMPION_MODEL
from sfmlops.core.forecasting.backtest import HORIZON_DAYS as CALIBRATED_HORIZON_DAYS
from sfmlops.core.forecasting.bundle import (
    ForecastBundle,
)
from sfmlops.core.forecasting.plan import (
    PLAN_COLUMNS,
    PlanByStore,
    by_store,
)
from sfmlops.services.api.forecast_json import ForecastWriter, to_json
from sfmlops.services.api.forecast_requests import (
    ASSUMPTIONS,
    COVARIATE_DEFAULT,
    COVARIATE_FROM_PLAN,
    COVARIATES,
    DAYS_PER_SERIES_KEY,
    DEFAULT_HORIZON_DAYS,
    FORECAST_DAY,
    MAX_BATCH_FORECAST_DAYS,
    ForecastBatch,
    InvalidForecastRequestError,
    PlanColumns,
    SeriesKey,
    SeriesRequest,
    UnknownSeriesError,
    with_plan,
)

# Series per `predict` call when the horizon is computed: bounds the feature frames built at
# once (100k series x 48 days in one call would build features for 4.8 M rows).
HORIZON_CHUNK_SERIES = 2_000
# The horizon a training job computed, in its bundle's folder (`save_horizon`).
HORIZON_FILE = "horizon.npz"
_FLAGS = (columns.OPEN, columns.PROMO, columns.SCHOOL_HOLIDAY)


@dataclass(frozen=True)
class HorizonForecasts:
    """Every series' forecast without caller covariates for each day of the calibrated
    horizon, computed once per champion (about 2.3 KB per series).

    Attributes:
        start: The horizon's first day (the day after the training history).
        rows: Series -> its row in the arrays (model series and summed store totals).
        values: (series, day, `columns.FORECAST_VALUES`), rounded to the cent.
        flags: (series, day, open / promo / school_holiday) used, as 0 or 1.
        state_holidays: (series, day) state-holiday code used.
        assumptions: What every row assumed (no caller covariates: all of them).
        plan: The plan the arrays were computed with (its days from `start` on).
    """

    start: dt.date
    rows: Mapping[SeriesKey, int]
    values: np.ndarray
    flags: np.ndarray
    state_holidays: np.ndarray
    assumptions: list[str]
    plan: PlanByStore = field(default_factory=dict, compare=False, repr=False)

    @property
    def days(self) -> int:
        return int(self.values.shape[1])

    def save(self, folder: Path) -> None:
        """Write the arrays and the plan they were computed with into a bundle's `folder`
        (`HORIZON_FILE`: plain arrays, nothing pickled)."""
        keys = sorted(self.rows, key=self.rows.__getitem__)
        planned = [
            (store_id, day.toordinal(), *(covariates[name] for name in PLAN_COLUMNS[2:]))
            for store_id, days in self.plan.items()
            for day, covariates in days.items()
        ]
        plan_columns = list(zip(*planned, strict=True)) if planned else [()] * len(PLAN_COLUMNS)
        arrays: dict[str, np.ndarray] = {
            "start": np.array(self.start.toordinal(), dtype=np.int64),
            "store_ids": np.array([store_id for store_id, _ in keys], dtype=np.int64),
            "product_ids": np.array([product_id for _, product_id in keys], dtype=str),
            "values": self.values,
            "flags": self.flags,
            "state_holidays": self.state_holidays,
            "assumptions": np.array(self.assumptions, dtype=str),
        }
        for name, values in zip(PLAN_COLUMNS, plan_columns, strict=True):
            kind = str if name == columns.STATE_HOLIDAY else np.int64
            arrays[f"plan_{name}"] = np.array(values, dtype=kind)
        # numpy's stub types **arrays as its allow_pickle keyword too.
        np.savez(folder / HORIZON_FILE, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, folder: Path) -> HorizonForecasts | None:
        """The horizon `save` wrote into a bundle's `folder`, or None (a bundle saved without
        one). Read as plain arrays (`allow_pickle=False`)."""
        path = folder / HORIZON_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as saved:
            plan = pd.DataFrame({name: saved[f"plan_{name}"] for name in PLAN_COLUMNS})
            plan[columns.SALES_DATE] = [
                dt.date.fromordinal(day) for day in plan[columns.SALES_DATE].tolist()
            ]
            keys = zip(saved["store_ids"].tolist(), saved["product_ids"].tolist(), strict=True)
            return cls(
                start=dt.date.fromordinal(int(saved["start"])),
                rows={key: row for row, key in enumerate(keys)},
                values=saved["values"],
                flags=saved["flags"],
                state_holidays=saved["state_holidays"],
                assumptions=saved["assumptions"].tolist(),
                plan=by_store(plan),
            )

    def offsets(self, request: SeriesRequest) -> list[int] | None:
        """The request's days as offsets into the horizon, or None when it cannot be a slice
        (caller covariates, a day outside the horizon, an unknown series)."""
        if (
            request.covariates
            or not request.dates
            or (request.store_id, request.product_id) not in self.rows
        ):
            return None
        offsets = [(day - self.start).days for day in request.dates]
        if min(offsets) < 0 or max(offsets) >= self.days:
            return None
        return offsets

    def forecast_object(
        self, request: SeriesRequest, offsets: Sequence[int], model_version: str, end: dt.date
    ) -> dict[str, Any]:
        """The request's forecast object, sliced from the arrays."""
        row = self.rows[(request.store_id, request.product_id)]
        flags = self.flags[row, offsets].tolist()
        holidays = self.state_holidays[row, offsets].tolist()
        used = [
            {
                columns.OPEN: day_flags[0],
                columns.PROMO: day_flags[1],
                columns.STATE_HOLIDAY: holiday,
                columns.SCHOOL_HOLIDAY: day_flags[2],
            }
            for day_flags, holiday in zip(flags, holidays, strict=True)
        ]
        return forecast_object(
            request,
            model_version,
            _assumptions(request),
            self.values[row, offsets].tolist(),
            end,
            used,
        )


@dataclass(frozen=True)
class ServedModel:
    """A champion ready to serve, with what the hot paths read precomputed.

    Attributes:
        default_start: First day of the default horizon: the day after the as-of date (or
            after the training history, whichever is later).
        default_bodies: Per series, the forecast object of the default horizon
            (`DEFAULT_HORIZON_DAYS` days from `default_start`) as JSON bytes.
        champion_body: The GET /v1/models/champion response for all series.
        default_forecast: The default horizon as a frame (`columns.FORECAST_COLUMNS` and
            each series' backtest RMSPE), kept as issued by the model cache (model series
            only, not the summed store totals).
        horizon_forecasts: Every series' forecast for the calibrated horizon.
        store_totals: Per store total that the model has no series of, the product series
            it is summed from (`(store, columns.DEFAULT_PRODUCT)` -> products).
    """

    version: str
    run_id: str
    registered_at: dt.datetime
    bundle: ForecastBundle
    series: frozenset[SeriesKey]
    store_ids: frozenset[int]
    default_start: dt.date
    default_bodies: Mapping[SeriesKey, bytes]
    champion: dict[str, Any]
    champion_series: Mapping[SeriesKey, dict[str, Any]]
    champion_body: bytes
    default_forecast: pd.DataFrame = field(compare=False, repr=False)
    horizon_forecasts: HorizonForecasts = field(compare=False, repr=False)
    store_totals: Mapping[SeriesKey, tuple[SeriesKey, ...]] = field(default_factory=dict)
    plan: PlanByStore = field(default_factory=dict, compare=False, repr=False)
    plan_revision: tuple[int, str] | None = None
    # The same plan as columns, for batches (`ForecastBatch.with_plan`).
    plan_columns: PlanColumns = field(
        default_factory=lambda: PlanColumns.of({}), compare=False, repr=False
    )

    @property
    def rmspe(self) -> float | None:
        """The champion's overall backtest RMSPE on the reported window."""
        value = self.champion["metrics"].get(metrics.RMSPE)
        return None if value is None else float(value)


def prepare(
    bundle: ForecastBundle,
    version: str,
    run_id: str,
    registered_at: dt.datetime,
    default_start: dt.date,
    plan: PlanByStore | None = None,
    plan_revision: tuple[int, str] | None = None,
    earlier: HorizonForecasts | None = None,
) -> ServedModel:
    """Build everything requests read from a loaded bundle: every series' forecast for the
    calibrated horizon, store totals, and the default horizon as JSON, all with the plan's
    covariates where it has them (`plan_revision` identifies the plan read).

    `earlier` is a horizon already computed for this bundle (the served model's, when new
    sales moved the default horizon or the plan changed): the series of states where no
    store's plan changed keep their rows, and only the others are predicted again.
    """
    plan = plan or {}
    keys = _series_keys(bundle)
    totals = _store_totals(keys)
    horizon_forecasts = _horizon_forecasts(bundle, keys, totals, plan, earlier)
    dates = horizon(default_start, DEFAULT_HORIZON_DAYS)
    calibrated_end = calibrated_until(bundle)

    def answer(served: list[SeriesKey]) -> list[dict[str, Any]]:
        requests = [
            with_plan(SeriesRequest(store_id, product, dates), plan) for store_id, product in served
        ]
        return _answer(bundle, horizon_forecasts, totals, requests, version, calibrated_end)

    forecasts = answer(keys)
    total_forecasts = answer(list(totals))
    champion, champion_series = _champion_description(bundle, version, run_id, registered_at)
    return ServedModel(
        version=version,
        run_id=run_id,
        registered_at=registered_at,
        bundle=bundle,
        series=frozenset(keys) | frozenset(totals),
        store_ids=frozenset(store_id for store_id, _ in keys),
        default_start=default_start,
        default_bodies={
            key: to_json(body)
            for key, body in zip([*keys, *totals], [*forecasts, *total_forecasts], strict=True)
        },
        champion=champion,
        champion_series=champion_series,
        champion_body=to_json(champion),
        default_forecast=_forecast_frame(forecasts, champion_series),
        horizon_forecasts=horizon_forecasts,
        store_totals=totals,
        plan=plan,
        plan_revision=plan_revision,
        plan_columns=PlanColumns.of(plan),
    )


def warm_up(model: ServedModel) -> None:
    """Predict one day of one series of every store, as a request with covariates would.

    A model builds some lookups on its first prediction (a sharded gbm its tables across
    shards, each booster its own state): without this, the first such request of each
    worker waited for them (3.8-4.4 s at 100k series). Called once per champion loaded.
    """
    first_of_store: dict[int, SeriesKey] = {}
    for key in sorted(model.series):
        first_of_store.setdefault(key[0], key)
    if not first_of_store:
        return
    day = (model.default_start,)
    batch = ForecastBatch.of(
        [
            SeriesRequest(store_id, product_id, day)
            for store_id, product_id in first_of_store.values()
        ]
    )
    model.bundle.predict(batch.future()[0])


def horizon_forecasts(bundle: ForecastBundle, plan: PlanByStore) -> HorizonForecasts:
    """Every series' and store total's forecast for the calibrated horizon, as `prepare`
    computes it (a training job saves it with its bundle: `HorizonForecasts.save`)."""
    keys = _series_keys(bundle)
    return _horizon_forecasts(bundle, keys, _store_totals(keys), plan)


def _series_keys(bundle: ForecastBundle) -> list[SeriesKey]:
    """The bundle's series in its champions' order."""
    return list(
        zip(
            bundle.champions[columns.STORE_ID].astype(int).tolist(),
            bundle.champions[columns.PRODUCT_ID].astype(str).tolist(),
            strict=True,
        )
    )


def _store_totals(keys: Sequence[SeriesKey]) -> dict[SeriesKey, tuple[SeriesKey, ...]]:
    """Each store without a `total` series: its total's key -> its product series."""
    products: dict[int, list[SeriesKey]] = {}
    for key in keys:
        products.setdefault(key[0], []).append(key)
    return {
        (store_id, columns.DEFAULT_PRODUCT): tuple(sorted(series))
        for store_id, series in products.items()
        if (store_id, columns.DEFAULT_PRODUCT) not in series
    }


def _horizon_forecasts(
    bundle: ForecastBundle,
    keys: Sequence[SeriesKey],
    totals: Mapping[SeriesKey, tuple[SeriesKey, ...]],
    plan: PlanByStore,
    earlier: HorizonForecasts | None = None,
) -> HorizonForecasts:
    """Forecast every series for the calibrated horizon (in chunks of series), then sum
    each store total from its products.

    A total's intervals are the sums of its products' bounds: exact if the products' errors
    moved together, wider than needed otherwise (a conservative interval). Its covariates
    are those of its first product.

    Rows of `earlier` (the same bundle's horizon) are kept for the series and store totals
    of states where no store's plan changed since they were computed (`_kept_rows`): they
    are the rows predicting them again would give.
    """
    start = first_forecast_date(bundle)
    dates = horizon(start, CALIBRATED_HORIZON_DAYS)
    days = len(dates)
    count = len(keys) + len(totals)
    values = np.zeros((count, days, len(columns.FORECAST_VALUES)))
    flags = np.zeros((count, days, len(_FLAGS)), dtype=np.int8)
    state_holidays = np.full((count, days), "0", dtype="<U1")
    series = [*keys, *totals]
    kept = _kept_rows(bundle, series, plan, earlier, start, days)
    assumed: set[str] = set()
    mine = np.flatnonzero(kept >= 0)
    if earlier is not None and len(mine):
        theirs = kept[mine]
        values[mine] = earlier.values[theirs]
        flags[mine] = earlier.flags[theirs]
        state_holidays[mine] = earlier.state_holidays[theirs]
        assumed.update(earlier.assumptions)
    predicted = np.flatnonzero(kept[: len(keys)] < 0).tolist()
    for first in range(0, len(predicted), HORIZON_CHUNK_SERIES):
        rows = predicted[first : first + HORIZON_CHUNK_SERIES]
        forecast = bundle.predict(
            ForecastBatch.of(
                [with_plan(SeriesRequest(keys[row][0], keys[row][1], dates), plan) for row in rows]
            ).future()[0]
        )
        assumed.update(forecast.assumptions)
        values[rows] = (
            forecast.frame[list(columns.FORECAST_VALUES)]
            .to_numpy(dtype=float)
            .reshape(len(rows), days, -1)
        )
        if forecast.covariates is not None:
            used = forecast.covariates
            flags[rows] = used[list(_FLAGS)].to_numpy(dtype=np.int8).reshape(len(rows), days, -1)
            state_holidays[rows] = (
                used[columns.STATE_HOLIDAY]
                .astype(str)
                .to_numpy(dtype="<U1")
                .reshape(len(rows), days)
            )
    positions = {key: row for row, key in enumerate(keys)}
    for offset, (total, products) in enumerate(totals.items()):
        row = len(keys) + offset
        positions[total] = row
        if kept[row] >= 0:
            continue
        members = [positions[key] for key in products]
        # Summed before rounding, as a total computed from scratch is.
        values[row] = values[members].sum(axis=0)
        flags[row] = flags[members[0]]
        state_holidays[row] = state_holidays[members[0]]
    return HorizonForecasts(
        start=start,
        rows=positions,
        values=np.round(values, 2),  # kept rows are rounded already: rounding is idempotent
        flags=flags,
        state_holidays=state_holidays,
        assumptions=[ASSUMPTIONS[name] for name in COVARIATES if ASSUMPTIONS[name] in assumed],
        plan=plan,
    )


def _kept_rows(
    bundle: ForecastBundle,
    series: Sequence[SeriesKey],
    plan: PlanByStore,
    earlier: HorizonForecasts | None,
    start: dt.date,
    days: int,
) -> np.ndarray:
    """Per series, its row in `earlier` if that row still holds, else -1.

    A row holds when the horizon is the same and no store of its store's state has a
    changed plan: the gbm's calendar reads a state's state and school holidays from every
    store of that state in the request, so a plan change reaches the whole state. Stores
    without a known state count as one state, as in the gbm; a bundle without store states
    keeps nothing once any plan changed.
    """
    kept = np.full(len(series), -1, dtype=np.int64)
    if earlier is None or earlier.start != start or earlier.days != days:
        return kept
    changed = {
        store_id
        for store_id in plan.keys() | earlier.plan.keys()
        if plan.get(store_id) != earlier.plan.get(store_id)
    }
    if not changed:
        return np.array([earlier.rows.get(key, -1) for key in series], dtype=np.int64)
    if bundle.states is None:
        return kept
    state_of = dict(
        zip(
            bundle.states[columns.STORE_ID].tolist(),
            bundle.states[columns.STATE].tolist(),
            strict=True,
        )
    )
    changed_states = {state_of.get(store_id) for store_id in changed}
    for row, key in enumerate(series):
        if state_of.get(key[0]) not in changed_states:
            kept[row] = earlier.rows.get(key, -1)
    return kept


def _answer(
    bundle: ForecastBundle,
    horizon_forecasts: HorizonForecasts,
    totals: Mapping[SeriesKey, tuple[SeriesKey, ...]],
    requests: Sequence[SeriesRequest],
    model_version: str,
    calibrated_end: dt.date,
) -> list[dict[str, Any]]:
    """Forecast objects for checked requests, in order: sliced from the horizon's arrays
    where possible, the rest predicted together (a store total as the sum of its products)."""
    answers: list[dict[str, Any] | None] = []
    for request in requests:
        offsets = horizon_forecasts.offsets(request)
        answers.append(
            None
            if offsets is None
            else horizon_forecasts.forecast_object(request, offsets, model_version, calibrated_end)
        )
    computed = [r for r, answer in zip(requests, answers, strict=True) if answer is None]
    fresh = iter(
        [
            json.loads(body)
            for body in _predicted(
                bundle, ForecastBatch.of(computed), totals, model_version, calibrated_end
            )
        ]
        if computed
        else []
    )
    return [answer if answer is not None else next(fresh) for answer in answers]


def _forecast_frame(
    forecasts: Sequence[dict[str, Any]], champion_series: Mapping[SeriesKey, dict[str, Any]]
) -> pd.DataFrame:
    """Forecast objects as one long frame, with each series' backtest RMSPE and where each
    day's covariates came from (`plan` when any came from the plan, else `default`)."""
    rows = [
        (
            body[columns.STORE_ID],
            body[columns.PRODUCT_ID],
            day[FORECAST_DAY],
            *(day[name] for name in columns.FORECAST_VALUES),
            champion_series[(body[columns.STORE_ID], body[columns.PRODUCT_ID])][metrics.RMSPE],
            COVARIATE_FROM_PLAN
            if COVARIATE_FROM_PLAN in day.get("covariate_sources", {}).values()
            else COVARIATE_DEFAULT,
        )
        for body in forecasts
        for day in body["forecast"]
    ]
    frame = pd.DataFrame(
        rows, columns=[*columns.FORECAST_COLUMNS, BACKTEST_RMSPE, COVARIATE_SOURCE]
    )
    frame[columns.SALES_DATE] = pd.to_datetime(frame[columns.SALES_DATE])
    return frame


def _champion_description(
    bundle: ForecastBundle, version: str, run_id: str, registered_at: dt.datetime
) -> tuple[dict[str, Any], dict[SeriesKey, dict[str, Any]]]:
    """The GET /v1/models/champion body, and each series' entry of its `stores` list."""
    reported: dict[str, Any] = next(
        (
            row
            for row in bundle.metadata.get("reported_metrics", [])
            if row.get(columns.MODEL) == CHAMPION_MODEL
        ),
        {},
    )
    by_model = [name for name in bundle.champions.columns if name.startswith(f"{metrics.RMSPE}_")]
    series: dict[SeriesKey, dict[str, Any]] = {}
    for row in bundle.champions.to_dict("records"):
        key = (int(row[columns.STORE_ID]), str(row[columns.PRODUCT_ID]))
        series[key] = {
            columns.STORE_ID: key[0],
            columns.PRODUCT_ID: key[1],
            columns.MODEL: str(row[columns.MODEL]),
            metrics.RMSPE: _number(row[metrics.RMSPE]),
            "rmspe_by_model": {
                name.removeprefix(f"{metrics.RMSPE}_"): _number(row[name]) for name in by_model
            },
        }
    description = {
        "name": MODEL_NAME,
        "version": version,
        "run_id": run_id,
        "trained_at": registered_at.isoformat(),
        "last_date": bundle.last_date.date().isoformat(),
        "metrics": {name: _number(reported.get(name)) for name in metrics.REPORTED},
        "champion_mix": {
            str(name): int(count) for name, count in bundle.metadata.get("champion_mix", {}).items()
        },
        "backtest_stand_ins": dict(bundle.metadata.get("backtest_stand_ins", {})),
        "stores": list(series.values()),
    }
    return description, series


def _number(value: Any) -> float | None:
    """A JSON-safe float (NaN, e.g. a series with no sales in the window, becomes null)."""
    if value is None or pd.isna(value):
        return None
    return float(value)


def horizon(start: dt.date, days: int) -> tuple[dt.date, ...]:
    """`days` consecutive days from `start`."""
    return tuple(start + dt.timedelta(days=offset) for offset in range(days))


def first_forecast_date(bundle: ForecastBundle) -> dt.date:
    """The earliest day the bundle forecasts: the day after its training history."""
    last: dt.date = bundle.last_date.date()
    return last + dt.timedelta(days=1)


def calibrated_until(bundle: ForecastBundle) -> dt.date:
    """The last day whose intervals are calibrated: `CALIBRATED_HORIZON_DAYS` days after the
    training history."""
    last: dt.date = bundle.last_date.date()
    return last + dt.timedelta(days=CALIBRATED_HORIZON_DAYS)


def forecast(model: ServedModel, batch: ForecastBatch) -> list[bytes]:
    """Forecast objects for a batch as JSON, in order: precomputed where possible (no caller
    covariates: the default horizon, or a slice of the calibrated horizon), the rest
    predicted with one `bundle.predict` call and written from its arrays (`_predicted`).

    Raises:
        UnknownSeriesError: A series the champion does not forecast.
        InvalidForecastRequestError: Dates before the horizon, a date twice, covariates for
            a day not asked for, a series twice, or more than `MAX_BATCH_FORECAST_DAYS`.
    """
    check_batch(model, batch)
    batch = batch.with_plan(model.plan_columns)
    default_days = [day.toordinal() for day in horizon(model.default_start, DEFAULT_HORIZON_DAYS)]
    calibrated_end = calibrated_until(model.bundle)
    ordinals = batch.day_ordinals.tolist()
    bodies: list[bytes | None] = []
    computed = []
    for index, (key, start, count, given) in enumerate(
        zip(
            batch.keys(),
            batch.starts.tolist(),
            batch.day_counts.tolist(),
            batch.covariates_given.tolist(),
            strict=True,
        )
    ):
        body = None
        if not given and ordinals[start : start + count] == default_days:
            body = model.default_bodies[key]
        elif not given:
            request = with_plan(batch.series_request(index), model.plan)
            offsets = model.horizon_forecasts.offsets(request)
            if offsets is not None:
                body = to_json(
                    model.horizon_forecasts.forecast_object(
                        request, offsets, model.version, calibrated_end
                    )
                )
        if body is None:
            computed.append(index)
        bodies.append(body)
    fresh = iter(
        _predicted(
            model.bundle, batch.take(computed), model.store_totals, model.version, calibrated_end
        )
        if computed
        else []
    )
    return [body if body is not None else next(fresh) for body in bodies]


def check_batch(model: ServedModel, batch: ForecastBatch) -> None:
    """Raise for too many series-days, or for the first series (in order) the champion
    cannot forecast as asked, as `check_series` and `check_request` would: the problems are
    found in numpy, the message written for the first one only."""
    total = int(batch.day_counts.sum())
    if total > MAX_BATCH_FORECAST_DAYS:
        raise InvalidForecastRequestError(
            f"{total} series-days asked for; at most {MAX_BATCH_FORECAST_DAYS} per request"
        )
    series = len(batch.day_counts)
    if not series:
        return
    earliest = first_forecast_date(model.bundle).toordinal()
    early = np.logical_or.reduceat(batch.day_ordinals < earliest, batch.starts)
    row_keys = np.sort(
        np.repeat(np.arange(series), batch.day_counts) * DAYS_PER_SERIES_KEY + batch.day_ordinals
    )
    asked_twice = np.zeros(series, dtype=bool)
    asked_twice[row_keys[1:][row_keys[1:] == row_keys[:-1]] // DAYS_PER_SERIES_KEY] = True
    refused = early | asked_twice | (batch.stray_days >= 0)
    seen: set[SeriesKey] = set()
    for index, key in enumerate(batch.keys()):
        check_series(model, key)
        if key in seen:
            raise InvalidForecastRequestError(
                f"store {key[0]} product {key[1]!r} appears twice in the batch"
            )
        seen.add(key)
        if refused[index]:
            stray = int(batch.stray_days[index])
            covariates: dict[dt.date, Mapping[str, Any]] = (
                {dt.date.fromordinal(stray): {}} if stray >= 0 else {}
            )
            check_request(model.bundle, SeriesRequest(*key, batch.dates(index), covariates))


def sliced(model: ServedModel, request: SeriesRequest) -> bytes | None:
    """A known series' forecast as JSON when it is a slice of the calibrated horizon (no
    caller covariates, every day within it); None when it must be predicted (`forecast`)."""
    forecasts = model.horizon_forecasts
    request = with_plan(request, model.plan)
    offsets = forecasts.offsets(request)
    if offsets is None:
        return None
    return to_json(
        forecasts.forecast_object(request, offsets, model.version, calibrated_until(model.bundle))
    )


def batch_json(model_version: str, bodies: Sequence[bytes]) -> bytes:
    """The POST /v1/forecast response around forecast objects already in JSON."""
    return (
        b'{"model_version":'
        + to_json(model_version)
        + b',"forecasts":['
        + b",".join(bodies)
        + b"]}"
    )


def check_series(model: ServedModel, key: SeriesKey) -> None:
    """Raise `UnknownSeriesError` naming the store (or product) the champion does not forecast."""
    if key in model.series:
        return
    store_id, product_id = key
    if store_id not in model.store_ids:
        raise UnknownSeriesError(
            f"unknown store {store_id}: the champion model has no series for it"
        )
    raise UnknownSeriesError(
        f"store {store_id} has no product {product_id!r} in the champion model"
    )


def check_request(bundle: ForecastBundle, request: SeriesRequest) -> None:
    """Raise `InvalidForecastRequestError` for days before the horizon or stray covariates."""
    earliest = first_forecast_date(bundle)
    early = [day for day in request.dates if day < earliest]
    if early:
        raise InvalidForecastRequestError(
            f"store {request.store_id}: {early[0]} is not after the model's last training date "
            f"{bundle.last_date.date()}; forecasts start on {earliest} at the earliest"
        )
    if len(set(request.dates)) != len(request.dates):
        raise InvalidForecastRequestError(f"store {request.store_id}: a date is asked for twice")
    stray = sorted(set(request.covariates) - set(request.dates))
    if stray:
        raise InvalidForecastRequestError(
            f"store {request.store_id}: covariates for {stray[0]}, which is not a forecast date"
        )


def forecast_object(
    request: SeriesRequest,
    model_version: str,
    assumptions: list[str],
    values: Sequence[Sequence[float]],
    calibrated_end: dt.date,
    covariates: Sequence[Mapping[str, Any]] | None = None,
    sources: Sequence[Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """The contract's forecast object for one series (values in `FORECAST_VALUES` order;
    `calibrated_end` is the bundle's `calibrated_until`).

    `covariates`, per day, are the covariates the forecast used; each day then also names
    where each came from: `caller` (the request), `plan` (the stored plan) or `default`
    (derived by the bundle); `sources` are those names when already at hand (the request's
    `known_and_sources`). The days hold these mappings as given, without copying them.
    """
    if covariates is None:
        days = [
            dict(zip(_DAY_FIELDS, (day.isoformat(), *row), strict=True))
            for day, row in zip(request.dates, values, strict=True)
        ]
    else:
        if sources is None:
            sources = request.known_and_sources()[1]
        days = [
            dict(zip(_DAY_FIELDS_USED, (day.isoformat(), *row, used, source), strict=True))
            for day, row, used, source in zip(
                request.dates, values, covariates, sources, strict=True
            )
        ]
    return {
        columns.STORE_ID: request.store_id,
        columns.PRODUCT_ID: request.product_id,
        "model_version": model_version,
        "start": request.dates[0].isoformat(),
        "days": len(request.dates),
        "assumptions": assumptions,
        "calibrated_until": calibrated_end.isoformat(),
        "beyond_calibrated_horizon": max(request.dates) > calibrated_end,
        "forecast": days,
    }


_DAY_FIELDS = (FORECAST_DAY, *columns.FORECAST_VALUES)
_DAY_FIELDS_USED = (*_DAY_FIELDS, "covariates", "covariate_sources")


def _assumptions(
    request: SeriesRequest, known: Sequence[tuple[Any, ...]] | None = None
) -> list[str]:
    """The covariates assumed for this series: those not given for every day (`known`: its
    `known_days`, when already at hand)."""
    days = request.known_days() if known is None else known
    # Per covariate, its values over the days (transposed in C).
    return [
        ASSUMPTIONS[name]
        for name, values in zip(COVARIATES, zip(*days, strict=True), strict=False)
        if None in values
    ]


def _predicted(
    bundle: ForecastBundle,
    batch: ForecastBatch,
    totals: Mapping[SeriesKey, tuple[SeriesKey, ...]],
    model_version: str,
    calibrated_end: dt.date,
) -> list[bytes]:
    """Each series' forecast object as JSON, predicted with one `bundle.predict` call and
    written from its arrays (`ForecastWriter`). A store total is predicted as its products
    and summed; its covariates, their sources and assumptions are its first product's.

    The batch must have passed `check_batch` and carry its plan (`ForecastBatch.with_plan`).
    """
    keys = batch.keys()
    parts = [totals.get(key, (key,)) for key in keys]
    expanded = batch.take(
        [index for index, group in enumerate(parts) for _ in group],
        [product for group in parts for _, product in group],
    )
    future, sources = expanded.future()
    forecast = bundle.predict(future)
    values = np.round(forecast.frame[list(columns.FORECAST_VALUES)].to_numpy(dtype=float), 2)
    writer = ForecastWriter(model_version, calibrated_end, forecast.covariates, sources)
    firsts = expanded.starts.tolist()
    bodies = []
    part = 0
    for key, group, count in zip(keys, parts, batch.day_counts.tolist(), strict=True):
        rows = slice(firsts[part], firsts[part] + count)
        day_values = values[rows]
        if group != (key,):
            # The products' rounded values summed in order, then rounded as Python rounds,
            # as a total's forecast always was.
            for other in firsts[part + 1 : part + len(group)]:
                day_values = day_values + values[other : other + count]
            day_values = np.array(
                [round(value, 2) for value in day_values.ravel().tolist()]
            ).reshape(day_values.shape)
        bodies.append(writer.series_json(key, expanded.day_ordinals[rows], day_values, rows))
        part += len(group)
    return bodies
