"""Forecasting at the edges: data from the database, bundles and reports on disk, future files.

The science lives in `sfmlops.core.forecasting`; this module reads its inputs and writes its
outputs (reports under HOME/reports, CSV files).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from sfmlops.adapters import files
from sfmlops.adapters.db import repository
from sfmlops.core import columns as c
from sfmlops.core.forecasting import metrics as m
from sfmlops.core.forecasting.bundle import ForecastBundle
from sfmlops.core.forecasting.training import BacktestReport
from sfmlops.core.validation import validate_sales
from sfmlops.services.loading import DataFileError, FileIssue

PLOTTED_STORES = 4
_FILE_COLUMN = {domain: header for header, domain in c.ROSSMANN_FUTURE_COLUMNS.items()}
_REQUIRED_FUTURE_HEADERS = ("Id", "Store", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday")


class NoTrainingDataError(ValueError):
    """The database has no sales (or none for the stores asked for)."""


@dataclass(frozen=True)
class TrainingData:
    """Sales history and store metadata read for training."""

    history: pd.DataFrame
    stores: pd.DataFrame


def read_training_data(engine: Engine, store_ids: Sequence[int] | None = None) -> TrainingData:
    """Every sales row (of the given stores) and their store metadata.

    Raises:
        NoTrainingDataError: When there is nothing to train on, or stores are unknown.
    """
    with engine.connect() as connection:
        stores = repository.list_stores(connection)
        if store_ids is not None:
            unknown = sorted(set(store_ids) - set(stores[c.STORE_ID].astype(int)))
            if unknown:
                raise NoTrainingDataError(f"unknown store(s): {', '.join(map(str, unknown))}")
            stores = stores[stores[c.STORE_ID].isin(list(store_ids))]
        history = repository.read_sales(connection, store_ids=store_ids)
    if history.empty:
        raise NoTrainingDataError("no sales in the database: run `sfmlops load-data` first")
    return TrainingData(history=history, stores=stores.reset_index(drop=True))


def read_future_file(path: Path, bundle: ForecastBundle) -> tuple[pd.Series, pd.DataFrame]:
    """Read a future file in the competition's test format and check it against the bundle.

    Columns `Id,Store,DayOfWeek,Date,Open,Promo,StateHoliday,SchoolHoliday` (DayOfWeek is
    optional and checked against the date when present); a blank `Open` means open.

    Returns:
        The row ids and the future-covariates frame (`columns.FUTURE_COLUMNS`), row by row.

    Raises:
        DataFileError: Naming line and column of every problem (missing columns, unknown
            stores, unparsable or past dates, bad flags, duplicate rows).
        files.DataFileNotFoundError: When the file does not exist.
    """
    raw = files.read_csv_as_text(path)
    missing = [name for name in _REQUIRED_FUTURE_HEADERS if name not in raw.columns]
    if missing:
        raise DataFileError([FileIssue(path, None, name, "", "missing column") for name in missing])
    raw = raw.rename(columns=c.ROSSMANN_FUTURE_COLUMNS)
    raw[c.OPEN] = raw[c.OPEN].where(raw[c.OPEN] != "", "1")
    # The sales rules check every covariate (store, date, flags, codes, weekday, duplicates);
    # a future row has no sales yet, so a placeholder satisfies that one column.
    checked = raw.rename(columns={c.DATE: c.SALES_DATE}).assign(**{c.SALES: "0"})
    known = sorted({store for store, _ in bundle.series})
    validated = validate_sales(checked, known)
    issues = [
        FileIssue(
            path,
            files.line_number(int(row)),
            _FILE_COLUMN.get(c.DATE if column == c.SALES_DATE else column, column),
            str(value),
            str(reason),
        )
        for row, column, value, reason in zip(
            validated.issues["row"].tolist(),
            validated.issues["column"].astype(str).tolist(),
            validated.issues["value"].tolist(),
            validated.issues["reason"].tolist(),
            strict=True,
        )
    ]
    row_id = pd.to_numeric(raw[c.ROSSMANN_ROW_ID], errors="coerce")
    bad_id = row_id.isna() | (row_id != np.floor(row_id.fillna(0)))
    issues += [
        FileIssue(
            path,
            files.line_number(int(i)),
            "Id",
            str(raw[c.ROSSMANN_ROW_ID].iloc[i]),
            "not a whole number",
        )
        for i in np.flatnonzero(bad_id.to_numpy())
    ]
    valid = validated.valid
    past = valid[c.SALES_DATE] <= bundle.last_date
    issues += [
        FileIssue(
            path,
            files.line_number(int(i)),
            "Date",
            str(raw[c.DATE].iloc[int(i)]),
            f"not after the data's end ({bundle.last_date.date()}): forecasts start the day after",
        )
        for i in valid.index[past]
    ]
    if issues:
        issues.sort(key=lambda issue: (issue.line or 0, issue.column))
        raise DataFileError(issues)
    future = valid.rename(columns={c.SALES_DATE: c.DATE})[list(c.FUTURE_COLUMNS)]
    return row_id.astype("int64"), future.reset_index(drop=True)


def write_submission(path: Path, row_ids: pd.Series, forecast: pd.DataFrame) -> None:
    """Write `Id,Sales,Sales_lower,Sales_upper` atomically (no partial file on failure)."""
    frame = pd.DataFrame({c.ROSSMANN_ROW_ID: row_ids.to_numpy()})
    for column in (c.YHAT, c.YHAT_LOWER, c.YHAT_UPPER):
        frame[column] = forecast[column].to_numpy(dtype=float).round(2)
    frame = frame.rename(columns=c.ROSSMANN_SUBMISSION_COLUMNS)
    _write_atomically(path, frame.to_csv(index=False))


def write_report(report: BacktestReport, reports_dir: Path, prefix: str) -> Path:
    """Write a backtest report folder: metrics CSVs and PNG plots; returns the folder.

    Files: `metrics.csv` (per model and window), `series_metrics.csv` (per series, model and
    window), `champions.csv`, `error_distribution.png`, `forecast_vs_actual.png`.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = reports_dir / f"{prefix}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    report.summary.to_csv(folder / "metrics.csv", index=False)
    per_series = m.accuracy_by(
        report.scored, [c.MODEL, c.BACKTEST_WINDOW, c.STORE_ID, c.PRODUCT_ID]
    )
    per_series.to_csv(folder / "series_metrics.csv", index=False)
    report.champions.to_csv(folder / "champions.csv", index=False)
    _plot_error_distribution(per_series, report.reported_window, folder / "error_distribution.png")
    _plot_forecasts(report, folder / "forecast_vs_actual.png")
    return folder


def _plot_error_distribution(per_series: pd.DataFrame, window: int, path: Path) -> None:
    plt = _pyplot()

    shown = per_series[per_series[c.BACKTEST_WINDOW] == window].dropna(subset=[m.RMSPE])
    figure, axes = plt.subplots(figsize=(8, 4.5))
    models = sorted(shown[c.MODEL].unique())
    data = [
        shown.loc[shown[c.MODEL] == name, m.RMSPE].clip(upper=1.0).to_numpy() for name in models
    ]
    axes.boxplot(data, tick_labels=models, showfliers=True)
    axes.set_ylabel("RMSPE per series (clipped at 1.0)")
    axes.set_title(f"Error distribution per model, backtest window {window}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_forecasts(report: BacktestReport, path: Path) -> None:
    plt = _pyplot()

    window = report.scored[report.scored[c.BACKTEST_WINDOW] == report.reported_window]
    stores = sorted(window[c.STORE_ID].unique())[:PLOTTED_STORES]
    figure, axes_list = plt.subplots(len(stores), 1, figsize=(10, 2.6 * len(stores)), squeeze=False)
    for axes, store in zip(axes_list[:, 0], stores, strict=True):
        part = window[window[c.STORE_ID] == store]
        actual = part.drop_duplicates(c.DATE)
        axes.plot(actual[c.DATE], actual[m.ACTUAL], color="black", linewidth=1.5, label="actual")
        for name, rows in part.groupby(c.MODEL, sort=True):
            axes.plot(rows[c.DATE], rows[c.YHAT], linewidth=1, label=str(name))
        champion = part[part[c.MODEL] == "champion"]
        if not champion.empty:
            axes.fill_between(
                champion[c.DATE],
                champion[c.YHAT_LOWER],
                champion[c.YHAT_UPPER],
                alpha=0.2,
                label="champion 80 %",
            )
        axes.set_title(f"store {store}")
        axes.legend(fontsize=7, ncol=5)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _pyplot() -> Any:
    """matplotlib's pyplot drawing to files only (imported on use: it takes seconds)."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
