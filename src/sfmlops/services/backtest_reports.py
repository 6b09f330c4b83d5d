"""Backtest reports on disk: metrics CSVs and matplotlib plots under HOME/reports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.core.forecasting.model_selection import BacktestReport

PLOTTED_STORES = 4


def write_report(report: BacktestReport, reports_dir: Path, prefix: str) -> Path:
    """Write a backtest report folder: metrics CSVs and PNG plots; returns the folder.

    Files: `metrics.csv` (per model and window), `series_metrics.csv` (per series, model and
    window), `champions.csv`, `error_distribution.png`, `forecast_vs_actual.png`.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = reports_dir / f"{prefix}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    report.summary.to_csv(folder / "metrics.csv", index=False)
    per_series = metrics.accuracy_by(
        report.scored,
        [columns.MODEL, columns.BACKTEST_WINDOW, columns.STORE_ID, columns.PRODUCT_ID],
    )
    per_series.to_csv(folder / "series_metrics.csv", index=False)
    report.champions.to_csv(folder / "champions.csv", index=False)
    _plot_error_distribution(per_series, report.reported_window, folder / "error_distribution.png")
    _plot_forecasts(report, folder / "forecast_vs_actual.png")
    return folder


def _plot_error_distribution(per_series: pd.DataFrame, window: int, path: Path) -> None:
    plt = _pyplot()

    shown = per_series[per_series[columns.BACKTEST_WINDOW] == window].dropna(subset=[metrics.RMSPE])
    figure, axes = plt.subplots(figsize=(8, 4.5))
    models = sorted(shown[columns.MODEL].unique())
    data = [
        shown.loc[shown[columns.MODEL] == name, metrics.RMSPE].clip(upper=1.0).to_numpy()
        for name in models
    ]
    axes.boxplot(data, tick_labels=models, showfliers=True)
    axes.set_ylabel("RMSPE per series (clipped at 1.0)")
    axes.set_title(f"Error distribution per model, backtest window {window}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_forecasts(report: BacktestReport, path: Path) -> None:
    plt = _pyplot()

    window = report.scored[report.scored[columns.BACKTEST_WINDOW] == report.reported_window]
    stores = sorted(window[columns.STORE_ID].unique())[:PLOTTED_STORES]
    figure, axes_list = plt.subplots(len(stores), 1, figsize=(10, 2.6 * len(stores)), squeeze=False)
    for axes, store in zip(axes_list[:, 0], stores, strict=True):
        part = window[window[columns.STORE_ID] == store]
        actual = part.drop_duplicates(columns.SALES_DATE)
        axes.plot(
            actual[columns.SALES_DATE],
            actual[metrics.ACTUAL],
            color="black",
            linewidth=1.5,
            label="actual",
        )
        for name, rows in part.groupby(columns.MODEL, sort=True):
            axes.plot(rows[columns.SALES_DATE], rows[columns.YHAT], linewidth=1, label=str(name))
        champion = part[part[columns.MODEL] == "champion"]
        if not champion.empty:
            axes.fill_between(
                champion[columns.SALES_DATE],
                champion[columns.YHAT_LOWER],
                champion[columns.YHAT_UPPER],
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
