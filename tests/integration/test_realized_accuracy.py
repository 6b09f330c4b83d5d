"""Forecasts kept as issued and scored when actuals land, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, event, func, select

from sfmlops.adapters.db import issued_forecasts as records
from sfmlops.adapters.db import sales_records
from sfmlops.adapters.db.tables import forecast_scores, issued_forecasts
from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.services import ingestion, loading, realized_accuracy

pytestmark = pytest.mark.integration

LAST_DAY = dt.date(2015, 6, 13)


def forecast_frame(stores: list[int], start: dt.date, days: int, yhat: float) -> pd.DataFrame:
    """Forecasts of `yhat` with an 80 % band of +-10 % and a 95 % band of +-20 %."""
    rows = [
        (store, columns.DEFAULT_PRODUCT, pd.Timestamp(start + dt.timedelta(days=offset)))
        for store in stores
        for offset in range(days)
    ]
    frame = pd.DataFrame(rows, columns=[columns.STORE_ID, columns.PRODUCT_ID, columns.SALES_DATE])
    return frame.assign(
        **{
            columns.YHAT: yhat,
            columns.YHAT_LOWER: yhat * 0.9,
            columns.YHAT_UPPER: yhat * 1.1,
            columns.YHAT_LOWER_95: yhat * 0.8,
            columns.YHAT_UPPER_95: yhat * 1.2,
            records.BACKTEST_RMSPE: 0.1,
        }
    )


def count(engine: Engine, table: object) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def sales_record(store: int, day: dt.date, sales: float) -> dict[str, object]:
    return {
        columns.STORE_ID: store,
        columns.SALES_DATE: day.isoformat(),
        columns.SALES: sales,
        columns.CUSTOMERS: 10,
        columns.OPEN: 1,
        columns.PROMO: 0,
        columns.STATE_HOLIDAY: "0",
        columns.SCHOOL_HOLIDAY: 0,
    }


def test_a_forecast_is_kept_once_per_series_day_version_and_issue_date(
    engine: Engine, rossmann_slice: Path
) -> None:
    loading.load_folder(engine, rossmann_slice)
    issue = LAST_DAY + dt.timedelta(days=1)
    with engine.begin() as connection:
        first = records.record_issued(
            connection, forecast_frame([1, 2], issue, 7, 100.0), "3", issue, "pipeline"
        )
    with engine.begin() as connection:
        # The API issuing the same days with the same version on the same day adds nothing,
        # and a forecast of a day before the issue date is no forecast of the future.
        again = forecast_frame([1, 2], issue - dt.timedelta(days=1), 8, 999.0)
        records.record_issued(connection, again, "3", issue, "api")
        records.record_issued(connection, forecast_frame([1], issue, 2, 1.0), "4", issue, "api")

    assert first == 14
    assert count(engine, issued_forecasts) == 14 + 2
    with engine.connect() as connection:
        kept = records.read_issued(connection, 1, issue, issue + dt.timedelta(days=6))
    version_3 = kept[kept[records.MODEL_VERSION] == "3"]
    assert version_3[columns.YHAT].tolist() == [100.0] * 7
    assert version_3[columns.HORIZON_DAYS].tolist() == list(range(1, 8))
    assert set(kept[records.COVARIATE_SOURCE]) == {records.DEFAULT_COVARIATE_SOURCE}
    assert kept[records.ACTUAL].isna().all()  # nothing has happened yet


def test_actuals_posted_later_are_scored_against_what_was_issued(
    engine: Engine, rossmann_slice: Path
) -> None:
    loading.load_folder(engine, rossmann_slice)
    day_1 = LAST_DAY + dt.timedelta(days=1)
    day_2 = day_1 + dt.timedelta(days=1)
    with engine.begin() as connection:
        records.record_issued(
            connection, forecast_frame([1, 2], day_1, 3, 100.0), "3", day_1, "api"
        )
        # Issued a day later by a newer version: horizon 1 for day 2.
        records.record_issued(connection, forecast_frame([1, 2], day_2, 2, 90.0), "4", day_2, "api")

    result = ingestion.ingest_records(
        engine,
        [
            sales_record(1, day_1, 125.0),
            sales_record(2, day_1, 100.0),
            sales_record(1, day_2, 100.0),
            sales_record(2, day_2, 0.0),
        ],
        "api",
    )

    assert result.accepted == 4
    # Day 1: version 3 (horizon 1); day 2: version 3 (horizon 2) and version 4 (horizon 1).
    assert count(engine, forecast_scores) == 2 + 2 + 2
    with engine.connect() as connection:
        report = realized_accuracy.realized_accuracy(connection, day_2, days=2)
        store_1 = realized_accuracy.realized_accuracy(connection, day_2, days=2, store_id=1)
        daily = realized_accuracy.store_daily_errors(connection, day_1, day_2)
    # Open days with sales: store 1 on both days (3 forecasts), store 2 on day 1 (1 forecast).
    assert report.overall[metrics.DAYS] == 4
    by_version = report.by_version.set_index(records.MODEL_VERSION)
    assert by_version.loc["4", metrics.RMSPE] == pytest.approx(0.1)  # 90 against 100; day 2 closed
    assert by_version.loc["3", metrics.DAYS] == 3
    assert store_1.by_store[columns.STORE_ID].tolist() == [1]
    # Store 1: -20 % on day 1, 0 % (version 3) and -10 % (version 4) on day 2.
    assert store_1.overall[metrics.RMSPE] == pytest.approx(((0.2**2 + 0 + 0.1**2) / 3) ** 0.5)
    # Inside the 80 % band (+-10 % of the forecast): only version 3 on day 2.
    assert store_1.overall[metrics.COVERAGE_80] == pytest.approx(1 / 3)
    assert store_1.by_horizon.set_index(columns.HORIZON_DAYS).loc[
        2, metrics.RMSPE
    ] == pytest.approx(0.0)
    # The daily series judges each day by its closest forecast: version 4's on day 2.
    row = daily.set_index([columns.STORE_ID, columns.SALES_DATE]).loc[(1, pd.Timestamp(day_2))]
    assert row[records.MODEL_VERSION] == "4"
    assert row[realized_accuracy.RATIO] == pytest.approx(1.0)


def test_a_corrected_actual_rescores_its_forecasts(engine: Engine, rossmann_slice: Path) -> None:
    loading.load_folder(engine, rossmann_slice)
    day = LAST_DAY + dt.timedelta(days=1)
    with engine.begin() as connection:
        records.record_issued(connection, forecast_frame([3], day, 1, 100.0), "3", day, "api")
    ingestion.ingest_records(engine, [sales_record(3, day, 50.0)], "api")
    ingestion.ingest_records(engine, [sales_record(3, day, 100.0)], "api")

    with engine.connect() as connection:
        report = realized_accuracy.realized_accuracy(connection, day, days=1)
    assert count(engine, forecast_scores) == 1
    assert report.overall[metrics.RMSPE] == pytest.approx(0.0)


def test_scoring_runs_after_the_ingest_commits(engine: Engine, rossmann_slice: Path) -> None:
    loading.load_folder(engine, rossmann_slice)
    day = LAST_DAY + dt.timedelta(days=1)
    with engine.begin() as connection:
        records.record_issued(connection, forecast_frame([4], day, 1, 100.0), "3", day, "api")
    seen_by_others: list[list[float]] = []

    def watch(connection, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO FORECAST_SCORES"):
            with engine.connect() as other:  # another session sees only committed rows
                stored = sales_records.read_sales(other, store_ids=[4], start=day)
            seen_by_others.append(stored[columns.SALES].tolist())

    event.listen(engine, "before_cursor_execute", watch)
    try:
        ingestion.ingest_records(engine, [sales_record(4, day, 80.0)], "api")
    finally:
        event.remove(engine, "before_cursor_execute", watch)
    assert seen_by_others == [[80.0]]
    assert count(engine, forecast_scores) == 1


def test_a_failing_scoring_keeps_the_ingest(engine: Engine, rossmann_slice: Path) -> None:
    loading.load_folder(engine, rossmann_slice)
    day = LAST_DAY + dt.timedelta(days=1)
    with engine.begin() as connection:
        forecast_scores.drop(connection)

    result = ingestion.ingest_records(engine, [sales_record(5, day, 80.0)], "api")

    assert result.accepted == 1
    with engine.connect() as connection:
        stored = sales_records.read_sales(connection, store_ids=[5], start=day)
    assert stored[columns.SALES].tolist() == [80.0]


def test_pruning_deletes_the_monitoring_rows_of_old_days_only(
    engine: Engine, rossmann_slice: Path
) -> None:
    loading.load_folder(engine, rossmann_slice)
    old, recent = LAST_DAY - dt.timedelta(days=400), LAST_DAY - dt.timedelta(days=2)
    with engine.begin() as connection:
        for day in (old, recent):
            records.record_issued(
                connection, forecast_frame([1, 2], day, 2, 100.0), "3", day, "api"
            )
        # Scores of an old day (its actuals are not in the slice): as scoring writes them.
        connection.execute(
            forecast_scores.insert(),
            [
                {columns.STORE_ID: store, columns.PRODUCT_ID: columns.DEFAULT_PRODUCT,
                 columns.SALES_DATE: old, records.MODEL_VERSION: "3", columns.HORIZON_DAYS: 1,
                 records.ISSUE_DATE: old, records.ACTUAL: 100.0,
                 **{name: 100.0 for name in columns.FORECAST_VALUES},
                 records.BACKTEST_RMSPE: 0.1}
                for store in (1, 2)
            ],
        )  # fmt: skip
    realized_accuracy.score_actuals(engine, [recent, recent + dt.timedelta(days=1)])
    recent_scores = count(engine, forecast_scores) - 2
    assert recent_scores > 0

    first_kept, deleted = realized_accuracy.prune(engine, LAST_DAY, keep_days=366)

    assert first_kept == LAST_DAY - dt.timedelta(days=365)
    assert deleted == 4 + 2  # the old days: 2 stores x 2 days issued, 2 scores
    assert count(engine, issued_forecasts) == 4
    assert count(engine, forecast_scores) == recent_scores
