"""Backtest reports on disk: metrics CSVs and matplotlib plots under HOME/reports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from sfmlops.core import columns as c
from sfmlops.core.forecasting import metrics as m
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
        actual = part.drop_duplicates(c.SALES_DATE)
        axes.plot(
            actual[c.SALES_DATE], actual[m.ACTUAL], color="black", linewidth=1.5, label="actual"
        )
        for name, rows in part.groupby(c.MODEL, sort=True):
            axes.plot(rows[c.SALES_DATE], rows[c.YHAT], linewidth=1, label=str(name))
        champion = part[part[c.MODEL] == "champion"]
        if not champion.empty:
            axes.fill_between(
                champion[c.SALES_DATE],
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
