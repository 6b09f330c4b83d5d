"""The store chart: actual sales beside the forecast and its 80 % / 95 % intervals.

`chart_frame` is the one table behind the chart (the page also shows it as "chart data",
so what is drawn can be read and checked); `store_chart` draws it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import altair as alt
import pandas as pd

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.ui import responses
from sfmlops.ui.wording import counted

# The chart table's date column, named as the API names a forecast day (the table is shown
# and downloaded as is).
DATE_COLUMN = "date"
CHART_COLUMNS = (DATE_COLUMN, columns.SALES, columns.OPEN, *columns.FORECAST_VALUES)
ACTUAL = "actual sales"
CLOSED = "closed"
FORECAST = "forecast"
BAND_80 = "80 % interval"
BAND_95 = "95 % interval"
COLORS = {
    ACTUAL: "#1f4e79",
    CLOSED: "#9e9e9e",
    FORECAST: "#e07b00",
    BAND_80: "#e07b00",
    BAND_95: "#f3c58f",
}
DAY_MS = 24 * 60 * 60 * 1000
DAY = "day"  # the chart's own columns: a day's label, whether it counts as closed,
CLOSED_FLAG = "is_closed"
RANGE_80 = "range_80"  # and each interval as one label, e.g. "3,160 - 3,991" (en dash)
RANGE_95 = "range_95"
# The intervals are quantiles of the champion's out-of-sample errors in its rolling backtest
# windows, per number of days ahead, open days only (`IntervalCalibration`).
BANDS_NOTE = (
    "The darker band held the day's sales on 8 of 10 open days of the model's backtests at "
    "the same number of days ahead, the lighter band on 19 of 20."
)
_COUNT_AXIS = alt.Axis(format="d", tickMinStep=1)  # counts of series: whole ticks only
RMSPE_BINS = 30
WEEK = "week"  # the realized accuracy chart's columns: a week's Monday, forecasts scored
FORECASTS = "forecasts"
RMSPE_CLIP_QUANTILE = 0.98
RMSPE_CLIP_STRETCH = 1.5  # clip when the worst would stretch the axis by half or more
# The RMSPE histogram's bands (`rmspe_bins`).
RMSPE_BAND_START = "start"
RMSPE_BAND_END = "end"
RMSPE_BAND_LABEL = "band"
RMSPE_BAND_SERIES = "series"
RMSPE_BAND_BEYOND = "beyond"
RMSPE_BAND_COLUMNS = (
    RMSPE_BAND_START,
    RMSPE_BAND_END,
    RMSPE_BAND_LABEL,
    RMSPE_BAND_SERIES,
    RMSPE_BAND_BEYOND,
)


def chart_frame(
    history: Iterable[responses.SalesDay], forecast: Sequence[responses.ForecastDay]
) -> pd.DataFrame:
    """One row per day: actuals (sales, open) then forecast days (yhat and intervals).

    A day with both (a forecast of a day that has sales) keeps both on one row.
    """
    actuals = pd.DataFrame(
        [
            {DATE_COLUMN: day.sales_date, columns.SALES: day.sales, columns.OPEN: day.open}
            for day in history
        ],
        columns=[DATE_COLUMN, columns.SALES, columns.OPEN],
    )
    predicted = pd.DataFrame(
        [day.model_dump() for day in forecast], columns=[DATE_COLUMN, *columns.FORECAST_VALUES]
    )
    frame = actuals.merge(predicted, on=DATE_COLUMN, how="outer").sort_values(DATE_COLUMN)
    frame[columns.OPEN] = frame[columns.OPEN].astype("Int64")
    return frame.reset_index(drop=True)[list(CHART_COLUMNS)]


def closed_days(frame: pd.DataFrame) -> pd.Series:
    """Per row of a `chart_frame`: the store was closed, or its forecast is no sales at all.

    Forecast days carry no open flag; a forecast whose whole 95 % interval is zero is the
    model saying "closed" (it assumes the series' usual open weekdays).
    """
    return (frame[columns.OPEN] == 0).fillna(False) | (frame[columns.YHAT_UPPER_95] == 0).fillna(
        False
    )


def store_chart(frame: pd.DataFrame, title: str) -> alt.LayerChart:
    """Bands under the forecast line, actual sales on top; closed days as grey columns.

    Args:
        frame: A `chart_frame`.
        title: The chart's title.
    """
    dates = pd.to_datetime(frame[DATE_COLUMN])
    # Days travel as ISO strings on a UTC scale, and tooltips show a ready-made label, so
    # no viewer's time zone can move a day.
    data = frame.assign(
        **{
            DATE_COLUMN: dates.dt.strftime("%Y-%m-%d"),
            DAY: dates.dt.strftime("%a %d %b %Y"),
            CLOSED_FLAG: closed_days(frame),
            RANGE_80: interval_labels(frame[columns.YHAT_LOWER], frame[columns.YHAT_UPPER]),
            RANGE_95: interval_labels(frame[columns.YHAT_LOWER_95], frame[columns.YHAT_UPPER_95]),
        }
    )
    base = alt.Chart(data).encode(
        x=alt.X(
            f"{DATE_COLUMN}:T",
            title=None,
            scale=alt.Scale(type="utc"),
            axis=alt.Axis(format="%d %b"),
        )
    )
    legend = alt.Color(
        "series:N",
        title=None,
        scale=alt.Scale(domain=list(COLORS), range=list(COLORS.values())),
        legend=alt.Legend(orient="top"),
    )
    date_tooltip = alt.Tooltip(f"{DAY}:N", title="day")

    closed = (
        base.transform_filter(f"datum.{CLOSED_FLAG}")
        .transform_calculate(
            series=f"'{CLOSED}'", day_end=f"toDate(datum.{DATE_COLUMN}) + {DAY_MS}"
        )
        .mark_rect(opacity=0.25)
        .encode(x2="day_end:T", color=legend, tooltip=[date_tooltip])
    )
    # Closed days are the grey columns, not dips to zero: lines and bands join across them.
    has_forecast = f"isValid(datum.{columns.YHAT}) && !datum.{CLOSED_FLAG}"
    band_95 = (
        base.transform_filter(has_forecast)
        .transform_calculate(series=f"'{BAND_95}'")
        .mark_area(opacity=0.45)
        .encode(y=_sales(columns.YHAT_UPPER_95), y2=f"{columns.YHAT_LOWER_95}:Q", color=legend)
    )
    band_80 = (
        base.transform_filter(has_forecast)
        .transform_calculate(series=f"'{BAND_80}'")
        .mark_area(opacity=0.35)
        .encode(y=_sales(columns.YHAT_UPPER), y2=f"{columns.YHAT_LOWER}:Q", color=legend)
    )
    forecast_line = (
        base.transform_filter(has_forecast)
        .transform_calculate(series=f"'{FORECAST}'")
        .mark_line(strokeDash=[6, 3], point=True)
        .encode(
            y=_sales(columns.YHAT),
            color=legend,
            tooltip=[
                date_tooltip,
                alt.Tooltip(f"{columns.YHAT}:Q", title="forecast", format=",.0f"),
                alt.Tooltip(f"{RANGE_80}:N", title="80 % range"),
                alt.Tooltip(f"{RANGE_95}:N", title="95 % range"),
            ],
        )
    )
    actual_line = (
        base.transform_filter(f"isValid(datum.{columns.SALES}) && !datum.{CLOSED_FLAG}")
        .transform_calculate(series=f"'{ACTUAL}'")
        .mark_line(point=True)
        .encode(
            y=_sales(columns.SALES),
            color=legend,
            tooltip=[
                date_tooltip,
                alt.Tooltip(f"{columns.SALES}:Q", title="sales", format=",.0f"),
                alt.Tooltip(f"{columns.OPEN}:N", title="open"),
            ],
        )
    )
    return alt.LayerChart(
        layer=[closed, band_95, band_80, forecast_line, actual_line], title=title, height=380
    )


def interval_labels(low: pd.Series, high: pd.Series) -> pd.Series:
    """Intervals as a planner reads them: "3,160 \N{EN DASH} 3,991" (whole units, an en
    dash); blank where a day has no forecast."""
    return pd.Series(
        [
            "" if pd.isna(lo) or pd.isna(hi) else f"{lo:,.0f} \N{EN DASH} {hi:,.0f}"
            for lo, hi in zip(low, high, strict=True)
        ],
        index=low.index,
        dtype=object,
    )


def _sales(field: str) -> alt.Y:
    # Every layer shares one y axis; one title keeps Vega-Lite from joining the field names.
    return alt.Y(f"{field}:Q", title="sales")


def chart_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The chart's data as text, two decimals, blanks where a day has no value of a kind."""
    table = pd.DataFrame({DATE_COLUMN: pd.to_datetime(frame[DATE_COLUMN]).dt.strftime("%Y-%m-%d")})
    table[columns.OPEN] = frame[columns.OPEN].map(
        lambda value: "" if pd.isna(value) else str(int(value))
    )
    for column in (columns.SALES, *columns.FORECAST_VALUES):
        table[column] = frame[column].map(lambda value: "" if pd.isna(value) else f"{value:.2f}")
    return table[list(CHART_COLUMNS)]


def rmspe_bins(
    series: pd.DataFrame, bins: int = RMSPE_BINS, clip_quantile: float = RMSPE_CLIP_QUANTILE
) -> pd.DataFrame:
    """Series per band of backtest RMSPE, the bands up to the `clip_quantile` of `series`.

    One store far above the rest (140 % beside a crowd near 15 %) would stretch the axis and
    squeeze everyone else into a few bars: the series above the quantile share one last
    band, labelled "≥ x %", drawn in another colour. The axis is clipped only when the
    worst series lies more than `RMSPE_CLIP_STRETCH` times beyond the quantile: with a
    handful of stores the quantile sits just under the worst one, and cutting there would
    single out a store no worse than its neighbours.

    Args:
        series: One row per series with an `rmspe` column (no missing values).
        bins: The number of bands below the clip.
        clip_quantile: Where the axis stops, as a quantile of the series' RMSPE.

    Returns:
        One row per band with a series in it: `start`, `end` (fractions), `label`, `series`
        (the count) and `beyond` (the last band, of the series above the clip).
    """
    rmspe = series[metrics.RMSPE].astype(float)
    clip = float(rmspe.quantile(clip_quantile))
    if rmspe.max() <= clip * RMSPE_CLIP_STRETCH:
        clip = float(rmspe.max())
    width = (clip if clip > 0 else float(rmspe.max()) or 1.0) / bins
    beyond = rmspe > clip
    band = (rmspe[~beyond] // width).clip(upper=bins - 1).astype(int)
    counts = band.value_counts().sort_index()
    rows = [
        {
            RMSPE_BAND_START: index * width,
            RMSPE_BAND_END: (index + 1) * width,
            RMSPE_BAND_LABEL: f"{index * width:.0%} to {(index + 1) * width:.0%}",
            RMSPE_BAND_SERIES: int(count),
            RMSPE_BAND_BEYOND: False,
        }
        for index, count in zip(counts.index.astype(int), counts.to_numpy(), strict=True)
    ]
    if beyond.any():
        start = max(clip, bins * width)
        rows.append(
            {
                RMSPE_BAND_START: start,
                RMSPE_BAND_END: start + width,
                RMSPE_BAND_LABEL: f"≥ {clip:.0%} (up to {rmspe.max():.0%})",
                RMSPE_BAND_SERIES: int(beyond.sum()),
                RMSPE_BAND_BEYOND: True,
            }
        )
    return pd.DataFrame(rows, columns=list(RMSPE_BAND_COLUMNS))


def rmspe_outliers_caption(series: pd.DataFrame, bands: pd.DataFrame) -> str | None:
    """Names what the histogram's last band holds: how many series, the worst and its RMSPE.

    Args:
        series: The histogram's series (`store_id`, `product_id`, `rmspe`).
        bands: Its `rmspe_bins`.

    Returns:
        The caption, or None when no series lies beyond the clip.
    """
    last = bands[bands[RMSPE_BAND_BEYOND]]
    if last.empty:
        return None
    count = int(last[RMSPE_BAND_SERIES].iloc[0])
    worst = series.iloc[int(series[metrics.RMSPE].astype(float).to_numpy().argmax())]
    name = f"store {int(worst[columns.STORE_ID])}"
    if worst.get(columns.PRODUCT_ID, columns.DEFAULT_PRODUCT) != columns.DEFAULT_PRODUCT:
        name += f" · {worst[columns.PRODUCT_ID]}"
    clip = float(last[RMSPE_BAND_START].iloc[0])
    lie = "lies" if count == 1 else "lie"
    return (
        f"The axis stops at {clip:.0%}: {counted(count, 'series', 'series')} {lie} beyond, "
        f"in the last bar; the worst is {name} at {float(worst[metrics.RMSPE]):.1%}."
    )


def stand_ins_caption(stand_ins: Mapping[str, str]) -> str:
    """Says which models' backtest figures are a cheaper stand-in's and what it is (the
    page's RMSPE and each store's are then not the served model's own); "" when none."""
    return "".join(
        f" The {model} figures are those of its backtest stand-in, {description}."
        for model, description in sorted(stand_ins.items())
    )


def chart_csv(frame: pd.DataFrame) -> bytes:
    """The chart's data as the "Download CSV" file: the `chart_table`, one row per day."""
    return chart_table(frame).to_csv(index=False).encode()


def rmspe_histogram(bands: pd.DataFrame) -> alt.Chart:
    """How many series fall in each band of backtest RMSPE (the `rmspe_bins` of the series)."""
    chart: alt.Chart = (
        alt.Chart(bands)
        .mark_bar(orient="vertical")  # x and x2 set: bars rise from 0, not lie along y
        .encode(
            x=alt.X(
                f"{RMSPE_BAND_START}:Q",
                title="backtest RMSPE",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, float(bands[RMSPE_BAND_END].max())], nice=False),
            ),
            x2=f"{RMSPE_BAND_END}:Q",
            y=alt.Y(f"{RMSPE_BAND_SERIES}:Q", title="series", axis=_COUNT_AXIS),
            color=alt.Color(
                f"{RMSPE_BAND_BEYOND}:N",
                scale=alt.Scale(domain=[False, True], range=[COLORS[ACTUAL], COLORS[FORECAST]]),
                legend=None,
            ),
            tooltip=[
                alt.Tooltip(f"{RMSPE_BAND_LABEL}:N", title="backtest RMSPE"),
                alt.Tooltip(f"{RMSPE_BAND_SERIES}:Q", title="series"),
            ],
        )
        .properties(height=280)
    )
    return chart


def weekly_accuracy(by_day: Iterable[responses.DayAccuracy]) -> pd.DataFrame:
    """Realized RMSPE and MAPE per week (weeks start on Monday), from the daily scores.

    Exact, not an average of averages: a week's RMSPE is the root of its days' squared
    RMSPE weighted by the forecasts each day scored, its MAPE their weighted mean.

    Returns:
        One row per week with a scored forecast: `week` (its Monday), `rmspe`, `mape` and
        `forecasts` (how many were scored).
    """
    days = pd.DataFrame(
        [
            {DATE_COLUMN: day.date, metrics.RMSPE: day.rmspe, metrics.MAPE: day.mape, "n": day.days}
            for day in by_day
            if day.days and day.rmspe is not None
        ],
        columns=[DATE_COLUMN, metrics.RMSPE, metrics.MAPE, "n"],
    )
    dates = pd.to_datetime(days[DATE_COLUMN])
    days[WEEK] = (dates - pd.to_timedelta(dates.dt.weekday, unit="D")).dt.date
    days["squared"] = days[metrics.RMSPE].astype(float) ** 2 * days["n"]
    days["absolute"] = days[metrics.MAPE].astype(float) * days["n"]
    weeks = days.groupby(WEEK, sort=True)[["squared", "absolute", "n"]].sum(min_count=1)
    return pd.DataFrame(
        {
            WEEK: weeks.index,
            metrics.RMSPE: (weeks["squared"] / weeks["n"]) ** 0.5,
            metrics.MAPE: weeks["absolute"] / weeks["n"],
            FORECASTS: weeks["n"].astype(int),
        }
    ).reset_index(drop=True)


def realized_accuracy_chart(weeks: pd.DataFrame) -> alt.Chart:
    """Weekly realized RMSPE and MAPE as two lines (a `weekly_accuracy` frame)."""
    data = weeks.assign(**{WEEK: pd.to_datetime(weeks[WEEK]).dt.strftime("%Y-%m-%d")})
    chart: alt.Chart = (
        alt.Chart(data)
        .transform_fold([metrics.RMSPE, metrics.MAPE], as_=["metric", "value"])
        .transform_calculate(metric="upper(datum.metric)")
        .mark_line(point=True)
        .encode(
            x=alt.X(
                f"{WEEK}:T",
                title="week starting",
                scale=alt.Scale(type="utc"),
                axis=alt.Axis(format="%d %b"),
            ),
            y=alt.Y("value:Q", title="realized error", axis=alt.Axis(format="%")),
            color=alt.Color(
                "metric:N",
                title=None,
                scale=alt.Scale(domain=["RMSPE", "MAPE"], range=[COLORS[ACTUAL], COLORS[FORECAST]]),
                legend=alt.Legend(orient="top"),
            ),
            tooltip=[
                alt.Tooltip(f"{WEEK}:N", title="week starting"),
                alt.Tooltip("metric:N"),
                alt.Tooltip("value:Q", format=".1%"),
                alt.Tooltip(f"{FORECASTS}:Q", title="forecasts scored", format=","),
            ],
        )
        .properties(height=260)
    )
    return chart


def champion_mix_chart(champion_mix: Mapping[str, int]) -> alt.Chart:
    """Series per champion model type."""
    mix = pd.DataFrame(sorted(champion_mix.items()), columns=[columns.MODEL, "series"])
    chart: alt.Chart = (
        alt.Chart(mix)
        .mark_bar(color=COLORS[FORECAST])
        .encode(
            x=alt.X("series:Q", title="series", axis=_COUNT_AXIS),
            y=alt.Y(f"{columns.MODEL}:N", title=None, sort="-x"),
            tooltip=[columns.MODEL, "series"],
        )
        .properties(height=280)
    )
    return chart
