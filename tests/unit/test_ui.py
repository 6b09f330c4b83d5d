"""Dashboard pieces without a server: the chart table, the chart spec, labels, the command."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from sfmlops.cli.dashboard import APP, streamlit_command
from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.settings import Settings
from sfmlops.ui import responses
from sfmlops.ui.charts import (
    CHART_COLUMNS,
    DATE_COLUMN,
    champion_mix_chart,
    chart_csv,
    chart_frame,
    chart_table,
    interval_labels,
    realized_accuracy_chart,
    rmspe_bins,
    rmspe_histogram,
    rmspe_outliers_caption,
    stand_ins_caption,
    store_chart,
    weekly_accuracy,
)
from sfmlops.ui.page_context import store_label
from sfmlops.ui.views.store import product_options
from sfmlops.ui.wording import counted

DAY = dt.date(2015, 6, 12)


def sales_day(day: dt.date, sales: float, is_open: int) -> responses.SalesDay:
    return responses.SalesDay(sales_date=day, sales=sales, open=is_open)


def forecast_day(day: dt.date, yhat: float) -> responses.ForecastDay:
    return responses.ForecastDay(
        date=day,
        yhat=yhat,
        yhat_lower=yhat - 10,
        yhat_upper=yhat + 10,
        yhat_lower_95=yhat - 20,
        yhat_upper_95=yhat + 20,
    )


def test_the_chart_frame_puts_actuals_then_forecast_days_in_date_order() -> None:
    history = [sales_day(DAY + dt.timedelta(days=1), 0, 0), sales_day(DAY, 5263.0, 1)]
    forecast = [forecast_day(DAY + dt.timedelta(days=2), 4100.456)]

    frame = chart_frame(history, forecast)

    assert list(frame.columns) == list(CHART_COLUMNS)
    assert list(frame[DATE_COLUMN]) == [DAY + dt.timedelta(days=n) for n in range(3)]
    assert frame[columns.OPEN].tolist() == [1, 0, pd.NA]
    assert frame[columns.SALES].iloc[:2].tolist() == [5263.0, 0.0]
    assert frame[columns.YHAT].isna().tolist() == [True, True, False]
    table = chart_table(frame)
    assert table.iloc[0].tolist() == ["2015-06-12", "5263.00", "1", "", "", "", "", ""]
    assert table.iloc[2].tolist() == [
        "2015-06-14", "", "", "4100.46", "4090.46", "4110.46", "4080.46", "4120.46",
    ]  # fmt: skip


def test_a_forecast_of_a_day_with_sales_keeps_both_on_one_row() -> None:
    frame = chart_frame([sales_day(DAY, 10.0, 1)], [forecast_day(DAY, 12.0)])

    assert len(frame) == 1
    assert frame.loc[0, [columns.SALES, columns.YHAT]].tolist() == [10.0, 12.0]


def test_the_store_chart_draws_closed_days_apart_from_the_sales_line() -> None:
    closed_forecast = responses.ForecastDay(
        date=DAY + dt.timedelta(days=3),
        yhat=0,
        yhat_lower=0,
        yhat_upper=0,
        yhat_lower_95=0,
        yhat_upper_95=0,
    )
    frame = chart_frame(
        [sales_day(DAY, 10.0, 1), sales_day(DAY + dt.timedelta(days=1), 0.0, 0)],
        [forecast_day(DAY + dt.timedelta(days=2), 9.0), closed_forecast],
    )

    spec = store_chart(frame, "Store 1").to_dict()

    assert spec["title"] == "Store 1"
    closed, band_95, band_80, forecast, actual = spec["layer"]
    assert {"filter": "datum.is_closed"} in closed["transform"]
    assert closed["mark"]["type"] == "rect"
    assert {"filter": "isValid(datum.sales) && !datum.is_closed"} in actual["transform"]
    assert {"filter": "isValid(datum.yhat) && !datum.is_closed"} in forecast["transform"]
    (rows,) = spec["datasets"].values()
    assert [row["is_closed"] for row in rows] == [False, True, False, True]
    assert (band_95["encoding"]["y"]["field"], band_95["encoding"]["y2"]["field"]) == (
        columns.YHAT_UPPER_95,
        columns.YHAT_LOWER_95,
    )
    assert (band_80["encoding"]["y"]["field"], band_80["encoding"]["y2"]["field"]) == (
        columns.YHAT_UPPER,
        columns.YHAT_LOWER,
    )
    assert forecast["encoding"]["y"]["field"] == columns.YHAT
    # One shared y axis title, whichever layer Vega-Lite takes it from.
    assert {layer["encoding"]["y"]["title"] for layer in spec["layer"][1:]} == {"sales"}


def test_the_champion_mix_chart_counts_series_per_model() -> None:
    spec = champion_mix_chart({"seasonal_naive": 3, "gbm": 1112}).to_dict()

    (values,) = spec["datasets"].values()
    assert values == [
        {columns.MODEL: "gbm", "series": 1112},
        {columns.MODEL: "seasonal_naive", "series": 3},
    ]


def backtests(rmspe: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            columns.STORE_ID: range(1, len(rmspe) + 1),
            columns.PRODUCT_ID: columns.DEFAULT_PRODUCT,
            metrics.RMSPE: rmspe,
        }
    )


def test_the_rmspe_histogram_stops_at_the_98th_percentile_and_names_the_outliers() -> None:
    # 98 stores between 10 % and 20 %, store 99 at 90 %, store 100 at 140 %.
    series = backtests([0.10 + 0.10 * i / 97 for i in range(98)] + [0.90, 1.40])

    bands = rmspe_bins(series)

    assert bands["series"].sum() == 100
    *crowd, last = bands.to_dict("records")
    assert last["beyond"]
    assert last["series"] == 2
    assert last["band"] == "≥ 21% (up to 140%)"
    assert not any(band["beyond"] for band in crowd)
    assert len(crowd) >= 10  # the crowd spreads over many bars, not three
    assert 0.20 < last["start"] < 0.22
    spec = rmspe_histogram(bands).to_dict()
    assert spec["encoding"]["x"]["scale"]["domain"] == [0, last["end"]]
    assert spec["mark"]["orient"] == "vertical"  # bars rise from 0 (x and x2 are set)
    assert last["end"] < 0.25
    assert rmspe_outliers_caption(series, bands) == (
        "The axis stops at 21%: 2 series lie beyond, in the last bar; "
        "the worst is store 100 at 140.0%."
    )


@pytest.mark.parametrize(
    "rmspe",
    [
        [0.12, 0.12, 0.12],
        [0.166, 0.168, 0.199, 0.209],  # the trained test stores: the worst is no outlier
        [0.10 + 0.10 * i / 99 for i in range(99)] + [0.25],
    ],
)
def test_an_rmspe_histogram_without_outliers_has_no_last_bar_nor_caption(
    rmspe: list[float],
) -> None:
    series = backtests(rmspe)

    bands = rmspe_bins(series)

    assert bands["series"].sum() == len(rmspe)
    assert not bands["beyond"].any()
    assert bands["end"].max() == pytest.approx(max(rmspe))
    assert rmspe_outliers_caption(series, bands) is None


def test_the_caption_names_a_backtest_stand_in_and_says_nothing_without_one() -> None:
    caption = stand_ins_caption({"gbm": "one booster of 170 rounds, in place of the served blend"})

    assert caption == (
        " The gbm figures are those of its backtest stand-in, one booster of 170 rounds, in "
        "place of the served blend."
    )
    assert stand_ins_caption({}) == ""


def test_realized_accuracy_is_summed_per_week_weighted_by_forecasts_scored() -> None:
    def day(
        date: str, rmspe: float | None, mape: float | None, scored: int
    ) -> responses.DayAccuracy:
        return responses.DayAccuracy(
            date=dt.date.fromisoformat(date), rmspe=rmspe, mape=mape, days=scored
        )

    by_day = [
        day("2015-07-20", 0.10, 0.08, 3),  # Monday
        day("2015-07-26", 0.20, 0.16, 1),  # Sunday, same week
        day("2015-07-27", 0.30, 0.25, 2),  # next Monday
        day("2015-07-28", None, None, 0),  # nothing scored: no week of its own
        day("2015-08-05", None, None, 0),
    ]

    weeks = weekly_accuracy(by_day)

    assert weeks["week"].tolist() == [dt.date(2015, 7, 20), dt.date(2015, 7, 27)]
    assert weeks["forecasts"].tolist() == [4, 2]
    assert weeks[metrics.RMSPE].tolist() == pytest.approx([(0.07 / 4) ** 0.5, 0.30])
    assert weeks[metrics.MAPE].tolist() == pytest.approx([0.10, 0.25])
    spec = realized_accuracy_chart(weeks).to_dict()
    (values,) = spec["datasets"].values()
    assert [row["week"] for row in values] == ["2015-07-20", "2015-07-27"]
    assert spec["transform"][0]["fold"] == [metrics.RMSPE, metrics.MAPE]
    assert weekly_accuracy([]).empty


def test_store_labels_carry_what_a_planner_searches_by() -> None:
    assert (
        store_label(responses.Store(store_id=12, store_type="a", state="HE")) == "12 · type a · HE"
    )
    assert store_label(responses.Store(store_id=13)) == "13"


@pytest.mark.parametrize(("given", "used"), [("", ""), ("/", ""), ("/dashboard/", "dashboard")])
def test_the_base_path_is_what_streamlit_expects(given: str, used: str) -> None:
    settings = Settings(_env_file=None, ui_base_path=given)

    command = streamlit_command(settings, "0.0.0.0", 8000)

    assert settings.ui_base_path == used
    assert command[1:5] == ["-m", "streamlit", "run", str(APP)]
    assert f"--server.baseUrlPath={used}" in command
    assert {"--server.address=0.0.0.0", "--server.port=8000", "--server.headless=true"} <= set(
        command
    )
    assert "--browser.gatherUsageStats=false" in command


def test_counts_are_worded_in_the_right_number() -> None:
    assert counted(1, "record") == "1 record"
    assert counted(17, "record") == "17 records"
    assert counted(0, "closed day") == "0 closed days"
    assert counted(1115, "store") == "1,115 stores"
    assert counted(2, "series", "series") == "2 series"


@pytest.mark.parametrize(
    ("products", "options"),
    [
        (["total"], ["total"]),  # the bundled data: one series, no picker
        (["P001"], ["P001"]),
        (["P001", "P002"], ["total", "P001", "P002"]),  # the store's total first
        (["cosmetics", "total"], ["cosmetics", "total"]),  # a total series of its own
    ],
)
def test_a_store_of_several_products_offers_its_total_first(
    products: list[str], options: list[str]
) -> None:
    assert product_options(products) == options


def test_the_forecast_tooltip_reads_each_interval_as_one_range() -> None:
    frame = chart_frame(
        [sales_day(DAY, 3000.0, 1)], [forecast_day(DAY + dt.timedelta(days=1), 3575.6)]
    )

    spec = store_chart(frame, "Store 1").to_dict()

    forecast = spec["layer"][3]
    assert [(tip["field"], tip["title"]) for tip in forecast["encoding"]["tooltip"]] == [
        ("day", "day"),
        (columns.YHAT, "forecast"),
        ("range_80", "80 % range"),
        ("range_95", "95 % range"),
    ]
    (rows,) = spec["datasets"].values()
    assert (rows[1]["range_80"], rows[1]["range_95"]) == (
        "3,566 \N{EN DASH} 3,586",
        "3,556 \N{EN DASH} 3,596",
    )
    assert rows[0]["range_80"] == ""  # a day of actuals only


def test_interval_labels_use_thousands_separators_and_no_decimals() -> None:
    labels = interval_labels(pd.Series([3160.4, None]), pd.Series([3990.6, 12.0]))

    assert labels.tolist() == ["3,160 \N{EN DASH} 3,991", ""]


def test_the_csv_download_is_the_chart_table() -> None:
    frame = chart_frame(
        [sales_day(DAY, 5263.0, 1)], [forecast_day(DAY + dt.timedelta(days=1), 10.0)]
    )

    lines = chart_csv(frame).decode().splitlines()

    assert lines == [
        ",".join(CHART_COLUMNS),
        "2015-06-12,5263.00,1,,,,,",
        "2015-06-13,,,10.00,0.00,20.00,-10.00,30.00",
    ]


def _page_with_a_failed_part() -> None:
    # AppTest runs this function's body as the page script: its imports must be inside.
    import streamlit as st  # noqa: PLC0415

    from sfmlops.ui import page_context  # noqa: PLC0415
    from sfmlops.ui.client import ApiError  # noqa: PLC0415

    page_context.show_part_failed("Model details unavailable", ApiError("answered 500"))
    st.write("the rest of the page")


def test_a_failed_part_is_shown_in_red_and_the_page_goes_on() -> None:
    app = AppTest.from_function(_page_with_a_failed_part).run()

    assert not app.exception
    assert [error.value for error in app.error] == ["**Model details unavailable:** answered 500"]
    assert [text.value for text in app.markdown] == ["the rest of the page"]
