"""Overview page: accuracy across stores, the champion mix, training jobs, data freshness."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.ui import page_context, responses
from sfmlops.ui.charts import (
    FORECASTS,
    champion_mix_chart,
    realized_accuracy_chart,
    rmspe_bins,
    rmspe_histogram,
    rmspe_outliers_caption,
    stand_ins_caption,
    weekly_accuracy,
)
from sfmlops.ui.client import ApiClient, ApiError, ModelUnavailableError, NotFoundError
from sfmlops.ui.wording import counted

WORST_STORES = 20
REALIZED_DAYS = 28
REALIZED_HISTORY_WEEKS = 26
RECENT_JOBS = 20


def render() -> None:
    client = page_context.api_client()
    st.title("Overview")
    try:
        status = client.status()
        jobs = client.training_jobs(RECENT_JOBS)
    except ApiError as error:
        page_context.stop_on(error)
    _freshness(status)
    st.header("Accuracy", divider="gray")
    try:
        champion = client.champion()
    except (NotFoundError, ModelUnavailableError) as error:
        st.info(
            f"**No model trained yet.** {error}. Accuracy appears here once a training job "
            "has registered a champion.",
            icon=":material/model_training:",
        )
    except ApiError as error:
        page_context.show_part_failed("Model details unavailable", error)
    else:
        _accuracy(champion)
    st.header("Realized accuracy", divider="gray")
    _realized(client)
    st.header("Training jobs", divider="gray")
    _jobs(jobs)


def _freshness(status: responses.Status) -> None:
    latest, stores, ingested, dead, serving = st.columns(5)
    latest.metric("Latest sales date", _date(status.latest_sales_date))
    stores.metric("Stores", f"{status.stores:,}", help=f"{status.sales_rows:,} sales rows")
    ingested.metric("Sales ingested, last 24 h", f"{status.sales_ingested_last_day:,}")
    dead.metric(
        "Dead letters, last 24 h",
        f"{status.dead_letters_last_day:,}",
        help="Records refused by validation in the last 24 hours, kept with their reasons.",
    )
    serving.metric("Serving model version", status.champion_version or "none")
    if status.as_of and status.latest_sales_date and status.latest_sales_date < status.as_of:
        behind = (status.as_of - status.latest_sales_date).days
        st.warning(
            f"Sales are {counted(behind, 'day')} behind: the latest is {status.latest_sales_date}, "
            f"the as-of date is {status.as_of}.",
            icon=":material/schedule:",
        )
    if status.dead_letters_last_day:
        st.warning(
            f"{counted(status.dead_letters_last_day, 'record')} "
            f"{'was' if status.dead_letters_last_day == 1 else 'were'} refused in the last 24 hours "
            "(table ingest_dead_letters has each one's reason).",
            icon=":material/mark_email_unread:",
        )


def _realized(client: ApiClient) -> None:
    """The forecasts as issued against what happened, day by day, and the stale stores."""
    try:
        accuracy = client.accuracy(REALIZED_DAYS)
        history = client.accuracy(7 * REALIZED_HISTORY_WEEKS)
        stale = client.stale_stores()
    except NotFoundError:
        st.info("No sales yet: nothing to score forecasts against.")
        return
    except ApiError as error:
        page_context.show_part_failed("Realized accuracy unavailable", error)
        return
    if not accuracy.overall.days or accuracy.overall.rmspe is None:
        st.info(
            f"No forecast scored in the last {REALIZED_DAYS} days yet: forecasts are scored "
            "when the actuals of their days land.",
            icon=":material/hourglass_empty:",
        )
    else:
        st.metric(
            f"Realized RMSPE, last {REALIZED_DAYS} days",
            f"{accuracy.overall.rmspe:.1%}",
            help=f"Every store's forecasts as issued against the actuals of {accuracy.start} "
            f"to {accuracy.end} (open days), every horizon.",
        )
        st.dataframe(
            pd.DataFrame(
                [
                    {"day": row.date, metrics.RMSPE: row.rmspe, "forecasts": row.days}
                    for row in accuracy.by_day
                ]
            ),
            hide_index=True,
            column_config={metrics.RMSPE: st.column_config.NumberColumn("RMSPE", format="percent")},
        )
    _realized_over_time(history)
    if stale.stores:
        listed = "; ".join(
            f"store {store.store_id} ({', '.join(f'{ratio:.1f}x' for ratio in store.ratios)})"
            for store in stale.stores
        )
        st.warning(
            f"**Stale stores** (last week's RMSPE above {stale.margin:g}x their baseline on "
            f"{counted(stale.days, 'evening')} up to {stale.end}; the daily DAG retrains them): "
            + listed,
            icon=":material/trending_down:",
        )
    else:
        st.caption(f"No stale store on the evenings up to {stale.end}.")


def _realized_over_time(history: responses.Accuracy) -> None:
    """Week by week, how far the served forecasts were from what sold."""
    st.subheader(f"Realized accuracy, last {REALIZED_HISTORY_WEEKS} weeks")
    weeks = weekly_accuracy(history.by_day)
    if weeks.empty:
        st.caption(f"No forecast scored between {history.start} and {history.end}.")
        return
    st.altair_chart(realized_accuracy_chart(weeks), width="stretch")
    scored = counted(int(weeks[FORECASTS].sum()), "forecast")
    st.caption(
        f"Forecasts as issued against the actuals of {history.start} to {history.end}, every "
        f"store and horizon, per week starting Monday: {scored} scored."
    )


def _accuracy(champion: responses.ChampionModel) -> None:
    series = pd.DataFrame(
        [
            {
                columns.STORE_ID: s.store_id,
                columns.PRODUCT_ID: s.product_id,
                columns.MODEL: s.model,
                metrics.RMSPE: s.rmspe,
            }
            for s in champion.stores
        ],
        columns=[columns.STORE_ID, columns.PRODUCT_ID, columns.MODEL, metrics.RMSPE],
    )
    st.caption(
        f"Model version {champion.version}"
        + f", trained {champion.trained_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"
        + f" on sales up to {champion.last_date}"
        + f". Backtest RMSPE over all stores: {_percent(champion.metrics.rmspe)}."
        + stand_ins_caption(champion.backtest_stand_ins)
    )
    spread, mix = st.columns([3, 2], gap="large")
    with spread:
        st.subheader("Backtest RMSPE per store")
        scored = series.dropna(subset=[metrics.RMSPE])
        if scored.empty:
            st.info("No store has a backtest score.")
        else:
            bands = rmspe_bins(scored)
            st.altair_chart(rmspe_histogram(bands), width="stretch")
            outliers = rmspe_outliers_caption(scored, bands)
            if outliers:
                st.caption(outliers)
    with mix:
        st.subheader("Champion mix")
        st.altair_chart(champion_mix_chart(champion.champion_mix), width="stretch")
    st.subheader(f"The {WORST_STORES} least accurate stores")
    worst = series.dropna(subset=[metrics.RMSPE]).nlargest(WORST_STORES, metrics.RMSPE)
    if worst.empty:
        st.info("No store has a backtest score.")
        return
    header = st.columns([2, 2, 1])
    for column, title in zip(header, ("store", "champion model", "backtest RMSPE"), strict=True):
        column.caption(title)
    for row in worst.itertuples(index=False):
        store_id, product_id, model, rmspe = (
            int(getattr(row, columns.STORE_ID)),
            str(getattr(row, columns.PRODUCT_ID)),
            str(getattr(row, columns.MODEL)),
            float(getattr(row, metrics.RMSPE)),
        )
        params = {page_context.STORE_PARAM: str(store_id)}
        label = f"Store {store_id}"
        if product_id != columns.DEFAULT_PRODUCT:
            params[page_context.PRODUCT_PARAM] = product_id
            label += f" · {product_id}"
        link, model_cell, rmspe_cell = st.columns([2, 2, 1])
        link.page_link(
            page_context.STORE_PAGE, label=label, icon=":material/storefront:", query_params=params
        )
        model_cell.write(model)
        rmspe_cell.write(f"{rmspe:.1%}")


def _jobs(jobs: list[responses.TrainingJob]) -> None:
    if not jobs:
        st.info("No training jobs yet.")
        return
    failed = next((job for job in jobs if job.status == "failed"), None)
    if failed is jobs[0]:
        st.error(
            f"**The latest training job ({failed.id[:12]}) failed.** {failed.error or ''}",
            icon=":material/error:",
        )
    table = pd.DataFrame(
        [
            {
                "job": job.id[:12],
                "status": job.status,
                "stores": "all"
                if job.stores is None
                else ", ".join(map(str, job.stores[:10]))
                + (" ..." if len(job.stores) > 10 else ""),
                "progress": f"{job.progress_done}/{job.progress_total}",
                "created": job.created_at,
                "finished": job.finished_at,
                "model version": job.model_version,
                "reason": job.reason,
                "error": job.error,
            }
            for job in jobs
        ]
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
            "finished": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
    )


def _date(value: object) -> str:
    return str(value) if value is not None else "none"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    render()
