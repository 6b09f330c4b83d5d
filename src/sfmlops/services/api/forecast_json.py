"""Forecast objects written as JSON bytes: the contract's shapes (`schemas.SeriesForecast`)
straight from a prediction's arrays, without a Python object per day in between."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pydantic_core

from sfmlops.core import columns
from sfmlops.services.api.forecast_requests import (
    ASSUMPTIONS,
    COVARIATE_SOURCES,
    COVARIATES,
    SOURCE_CODE_DEFAULT,
    SeriesKey,
)


def to_json(body: Any) -> bytes:
    """Compact JSON bytes of a response body (pydantic-core's encoder: 4x `json.dumps`)."""
    return pydantic_core.to_json(body)


class ForecastWriter:
    """Writes forecast objects as JSON from a prediction's arrays, as `to_json` writes the
    contract's objects: the per-day parts that repeat (a day's date, its covariates and their
    sources: a few dozen combinations in a batch) are written once each, the values with
    one `to_json` per series."""

    def __init__(
        self,
        model_version: str,
        calibrated_end: dt.date,
        covariates: pd.DataFrame | None,
        sources: np.ndarray,
    ) -> None:
        """Args: `covariates`: the covariates each row used (None: days without them);
        `sources`: (rows, covariate) codes of where each came from (`ForecastBatch.future`)."""
        self._version = to_json(model_version)
        self._calibrated_end = calibrated_end.toordinal()
        self._calibrated_json = to_json(calibrated_end.isoformat())
        self._dates: dict[int, bytes] = {}
        self._sources = sources
        self._assumed = sources == SOURCE_CODE_DEFAULT
        self._assumptions: dict[tuple[bool, ...], bytes] = {}
        self._extras = self._day_extras(covariates, sources)

    @staticmethod
    def _day_extras(covariates: pd.DataFrame | None, sources: np.ndarray) -> list[bytes] | None:
        """Per row, the day's `covariates` and `covariate_sources` members as JSON."""
        if covariates is None:
            return None
        codes = np.zeros(len(sources), dtype=np.int64)
        uniques = []
        for name in COVARIATES:
            used = covariates[name].astype(str if name == columns.STATE_HOLIDAY else int)
            column_codes, column_uniques = pd.factorize(used.to_numpy())
            codes = codes * len(column_uniques) + column_codes
            uniques.append(column_uniques.tolist())
        for position in range(len(COVARIATES)):
            codes = codes * len(COVARIATE_SOURCES) + sources[:, position]
        combinations, inverse = np.unique(codes, return_inverse=True)
        written = []
        for combination in combinations.tolist():
            # The code's digits, last covariate's source first.
            rest = combination
            source_names = []
            for _ in COVARIATES:
                rest, source = divmod(rest, len(COVARIATE_SOURCES))
                source_names.append(COVARIATE_SOURCES[source])
            values = []
            for column_uniques in reversed(uniques):
                rest, position = divmod(rest, len(column_uniques))
                values.append(column_uniques[position])
            day_covariates = dict(zip(COVARIATES, reversed(values), strict=True))
            day_sources = dict(zip(COVARIATES, reversed(source_names), strict=True))
            written.append(
                b',"covariates":'
                + to_json(day_covariates)
                + b',"covariate_sources":'
                + to_json(day_sources)
            )
        return [written[index] for index in inverse.tolist()]

    def _date(self, ordinal: int) -> bytes:
        written = self._dates.get(ordinal)
        if written is None:
            written = self._dates[ordinal] = to_json(dt.date.fromordinal(ordinal).isoformat())
        return written

    def series_json(
        self, key: SeriesKey, ordinals: np.ndarray, values: np.ndarray, rows: slice
    ) -> bytes:
        """One series' forecast object: its days (`ordinals`), their `values` (in
        `columns.FORECAST_VALUES` order) and its `rows` of the covariates and sources."""
        days = ordinals.tolist()
        numbers = to_json(values.ravel().tolist())[1:-1].split(b",")
        width = len(columns.FORECAST_VALUES)
        extras = self._extras[rows] if self._extras is not None else [b""] * len(days)
        written = b",".join(
            [
                _DAY_JSON
                % (self._date(day), *numbers[offset * width : (offset + 1) * width], extra)
                for offset, (day, extra) in enumerate(zip(days, extras, strict=True))
            ]
        )
        assumed = tuple(self._assumed[rows].any(axis=0).tolist())
        assumptions = self._assumptions.get(assumed)
        if assumptions is None:
            assumptions = self._assumptions[assumed] = to_json(
                [ASSUMPTIONS[name] for name, yes in zip(COVARIATES, assumed, strict=True) if yes]
            )
        return _SERIES_JSON % (
            key[0],
            to_json(key[1]),
            self._version,
            self._date(days[0]),
            len(days),
            assumptions,
            self._calibrated_json,
            b"true" if max(days) > self._calibrated_end else b"false",
            written,
        )


# The contract's forecast day and forecast object (`schemas.ForecastDay`,
# `schemas.SeriesForecast`) as `to_json` writes them, members in the same order.
_DAY_JSON = (
    b'{"date":%b,"yhat":%b,"yhat_lower":%b,"yhat_upper":%b,"yhat_lower_95":%b,"yhat_upper_95":%b%b}'
)
_SERIES_JSON = (
    b'{"store_id":%d,"product_id":%b,"model_version":%b,"start":%b,"days":%d,'
    b'"assumptions":%b,"calibrated_until":%b,"beyond_calibrated_horizon":%b,"forecast":[%b]}'
)
