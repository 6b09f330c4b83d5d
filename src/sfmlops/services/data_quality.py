"""Data-quality checks the scheduler runs after each ingest and each batch forecast.

Reports are plain figures; thresholds turn them into breaches (human-readable reasons),
so one report can be shown, stored and judged with different tolerances.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import Connection

from sfmlops.adapters.db import dead_letter_records, forecast_records, sales_records, store_records

SHOWN_IDS = 20  # how many store ids or series a breach message names before "..."


@dataclass(frozen=True)
class IngestReport:
    """What landed for one sales day.

    Attributes:
        sales_date: The day checked.
        stores: Stores known to the database.
        rows_per_store: Sales rows stored for the day, by store.
        missing_stores: Known stores without a record for the day, ascending.
        dead_letters: Records rejected since `dead_letters_since`.
        dead_letters_since: Start of the dead-letter window (the previous run, usually).
    """

    sales_date: dt.date
    stores: int
    rows_per_store: dict[int, int]
    missing_stores: list[int]
    dead_letters: int
    dead_letters_since: dt.datetime

    @property
    def rows(self) -> int:
        """Sales rows stored for the day, all stores."""
        return sum(self.rows_per_store.values())


@dataclass(frozen=True)
class IngestThresholds:
    """When an ingest report fails: fewer rows than `min_rows`, or more than the maximums."""

    min_rows: int = 1
    max_missing_stores: int = 0
    max_dead_letters: int = 0


def ingest_report(
    connection: Connection, sales_date: dt.date, dead_letters_since: dt.datetime
) -> IngestReport:
    """Rows landed per store for `sales_date`, stores missing it, dead letters since a time."""
    rows_per_store = sales_records.sales_rows_per_store(connection, sales_date)
    known = store_records.store_ids(connection)
    return IngestReport(
        sales_date=sales_date,
        stores=len(known),
        rows_per_store=rows_per_store,
        missing_stores=sorted(known - set(rows_per_store)),
        dead_letters=dead_letter_records.count_dead_letters(connection, dead_letters_since),
        dead_letters_since=dead_letters_since,
    )


def ingest_breaches(report: IngestReport, thresholds: IngestThresholds) -> list[str]:
    """Why `report` fails `thresholds` (empty when it passes)."""
    breaches = []
    if report.rows < thresholds.min_rows:
        breaches.append(
            f"{report.rows} sales rows landed for {report.sales_date}, "
            f"expected at least {thresholds.min_rows}"
        )
    if len(report.missing_stores) > thresholds.max_missing_stores:
        breaches.append(
            f"{len(report.missing_stores)} of {report.stores} stores have no record for "
            f"{report.sales_date} (allowed {thresholds.max_missing_stores}): "
            f"{_listing(report.missing_stores)}"
        )
    if report.dead_letters > thresholds.max_dead_letters:
        breaches.append(
            f"{report.dead_letters} records dead-lettered since "
            f"{report.dead_letters_since.isoformat()} (allowed {thresholds.max_dead_letters}); "
            "see the ingest_dead_letters table"
        )
    return breaches


@dataclass(frozen=True)
class ForecastReport:
    """Whether a model version's batch forecast covers every series for the horizon.

    Attributes:
        model_version: The version checked.
        horizon_days: Days each series must have.
        series: Series with sales (each must be forecast).
        complete_series: Series with exactly `horizon_days` forecast days.
        incomplete: Series with another number of days, as (store_id, product_id, days).
    """

    model_version: str
    horizon_days: int
    series: int
    complete_series: int
    rows: int
    incomplete: list[tuple[int, str, int]] = field(default_factory=list)


def forecast_report(
    connection: Connection, model_version: str, horizon_days: int
) -> ForecastReport:
    """Forecast days per series for `model_version`, against every series with sales."""
    expected = store_records.series_keys(connection)
    forecast = forecast_records.forecast_days_per_series(connection, model_version)
    incomplete = sorted(
        (store_id, product_id, forecast.get((store_id, product_id), (0, None))[0])
        for store_id, product_id in expected
        if forecast.get((store_id, product_id), (0, None))[0] != horizon_days
    )
    return ForecastReport(
        model_version=model_version,
        horizon_days=horizon_days,
        series=len(expected),
        complete_series=len(expected) - len(incomplete),
        rows=sum(days for days, _ in forecast.values()),
        incomplete=incomplete,
    )


def forecast_breaches(report: ForecastReport, max_incomplete_series: int = 0) -> list[str]:
    """Why `report` fails (empty when it passes)."""
    if report.series == 0:
        return ["no series have sales: nothing was forecast"]
    if report.rows == 0:
        return [
            f"no forecasts of model version {report.model_version}: no such version was "
            "forecast (`sfmlops pipeline forecast --model-version` writes them)"
        ]
    if len(report.incomplete) <= max_incomplete_series:
        return []
    named = [f"{store}/{product}: {days} days" for store, product, days in report.incomplete]
    return [
        f"{len(report.incomplete)} of {report.series} series lack {report.horizon_days} forecast "
        f"days for model version {report.model_version} (allowed {max_incomplete_series}): "
        f"{_listing(named)}"
    ]


def _listing(items: list[int] | list[str]) -> str:
    shown = ", ".join(map(str, items[:SHOWN_IDS]))
    return shown + (" ..." if len(items) > SHOWN_IDS else "")
