"""Store page: a store's recent sales beside its forecast, the model's accuracy, a retrain."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.core.forecasting.backtest import HORIZON_DAYS
from sfmlops.core.job_status import JobStatus
from sfmlops.ui import page_context, responses
from sfmlops.ui.charts import chart_frame, chart_table, closed_days, store_chart
from sfmlops.ui.client import (
    ApiClient,
    ApiError,
    ModelUnavailableError,
    NotFoundError,
)
from sfmlops.ui.login import signed_in_user
from sfmlops.ui.wording import counted

DEFAULT_HISTORY_WEEKS = 8
MAX_HISTORY_WEEKS = 52
DEFAULT_HORIZON_DAYS = 14
# The intervals are calibrated on backtests of this horizon; further out they are guesses.
MAX_HORIZON_DAYS = HORIZON_DAYS
RETRAIN_POLL_SECONDS = 2.0
# Session keys.
STORE_KEY = "store_id"
PRODUCT_KEY = "product_id"
WEEKS_KEY = "history_weeks"
HORIZON_INPUT_KEY = "horizon_days_input"
HORIZON_KEY = "horizon_days"  # the horizon last asked for with "Forecast next N days"
# Days of realized accuracy the model panel shows.
REALIZED_DAYS = 28
WATCH_KEY = "retrain_watch"
NEWS_KEY = "retrain_news"


@dataclass(frozen=True)
class RetrainWatch:
    """The retrain this session started and follows."""

    job_id: str
    store_id: int
    product_id: str
    previous_version: str | None


def render() -> None:
    client = page_context.api_client()
    st.title("Store forecast")
    try:
        stores = page_context.store_list()
    except ApiError as error:
        page_context.stop_on(error)
    store_id = _pick_store(stores)
    if store_id is None:
        st.stop()
    try:
        store = client.store(store_id)
        status = client.status()
    except NotFoundError:
        st.warning(f"Store {store_id} is no longer in the database.", icon=":material/search_off:")
        st.stop()
    except ApiError as error:
        page_context.stop_on(error)
    if not store.series or status.as_of is None:
        st.info(f"Store {store_id} has no sales yet: nothing to chart or forecast.")
        st.stop()
    product_id = _pick_product(store)
    weeks, horizon_days = _chart_controls()

    news = st.session_state.pop(NEWS_KEY, None)
    if news:
        st.success(news, icon=":material/check_circle:")
    chart_column, model_column = st.columns([3, 1], gap="large")
    with model_column:
        champion = _model_panel(client, store_id, product_id, status.champion_version)
        # A store retrain refits a series inside the champion (or, before any champion,
        # trains that store alone); stores the champion lacks need a full training job.
        retrainable = champion is not None or status.champion_version is None
        _retrain(client, store_id, product_id, status.champion_version, retrainable)
    with chart_column:
        _chart(client, store_id, product_id, status.as_of, weeks, horizon_days, champion)


def _pick_store(stores: list[responses.Store]) -> int | None:
    """The store picker, opened on ?store= when that names a store; keeps ?store= in step."""
    by_id = {store.store_id: store for store in stores}
    requested = st.query_params.get(page_context.STORE_PARAM)
    requested_id = int(requested) if requested and requested.isdigit() else None
    if STORE_KEY not in st.session_state:
        st.session_state[STORE_KEY] = requested_id if requested_id in by_id else None
    picked: int | None = st.selectbox(
        "Store",
        list(by_id),
        key=STORE_KEY,
        format_func=lambda store_id: page_context.store_label(by_id[store_id]),
        placeholder="Type a store id, a store type (a-d) or a state (e.g. HE)",
        help="Search by id, type or state.",
    )
    if picked is None:
        if requested is not None and requested_id not in by_id:
            st.warning(
                f"There is no store {requested!r}: the database has {len(by_id):,} stores "
                f"({min(by_id, default='-')} to {max(by_id, default='-')}). Pick one above.",
                icon=":material/search_off:",
            )
        elif not by_id:
            st.info("No stores yet: load data with `sfmlops load-data`.")
        st.query_params.pop(page_context.STORE_PARAM, None)
        return None
    st.query_params[page_context.STORE_PARAM] = str(picked)
    return picked


def product_options(products: list[str]) -> list[str]:
    """The picker's series for a store's products: with several products and no `total`
    series of its own, the store's total (their sum, which the API serves) comes first."""
    if len(products) > 1 and columns.DEFAULT_PRODUCT not in products:
        return [columns.DEFAULT_PRODUCT, *products]
    return products


def _pick_product(store: responses.StoreDetail) -> str:
    """The series to show: a picker only when the store sells more than one product."""
    products = product_options([series.product_id for series in store.series])
    if len(products) == 1:
        st.query_params.pop(page_context.PRODUCT_PARAM, None)
        return products[0]
    if st.session_state.get(PRODUCT_KEY) not in products:
        requested = st.query_params.get(page_context.PRODUCT_PARAM)
        st.session_state[PRODUCT_KEY] = (
            requested
            if requested in products
            else (columns.DEFAULT_PRODUCT if columns.DEFAULT_PRODUCT in products else products[0])
        )
    product_id: str = st.selectbox("Product", products, key=PRODUCT_KEY)
    st.query_params[page_context.PRODUCT_PARAM] = product_id
    return product_id


def _chart_controls() -> tuple[int, int]:
    """Weeks of history and the forecast horizon (set with "Forecast next N days")."""
    history, horizon = st.columns([1, 2], vertical_alignment="bottom")
    weeks = int(
        history.number_input(
            "Weeks of history",
            key=WEEKS_KEY,
            min_value=1,
            max_value=MAX_HISTORY_WEEKS,
            value=DEFAULT_HISTORY_WEEKS,
            step=1,
        )
    )
    with horizon.form("forecast", border=False):
        days, button = st.columns([1, 1], vertical_alignment="bottom")
        requested = days.number_input(
            "Days to forecast",
            key=HORIZON_INPUT_KEY,
            min_value=1,
            max_value=MAX_HORIZON_DAYS,
            value=DEFAULT_HORIZON_DAYS,
            step=1,
            help=f"At most {MAX_HORIZON_DAYS} days: the horizon the intervals are calibrated on.",
        )
        if button.form_submit_button("Forecast next N days", type="primary"):
            st.session_state[HORIZON_KEY] = int(requested)
    return weeks, int(st.session_state.get(HORIZON_KEY, DEFAULT_HORIZON_DAYS))


def _chart(
    client: ApiClient,
    store_id: int,
    product_id: str,
    as_of: dt.date,
    weeks: int,
    horizon_days: int,
    champion: responses.ChampionModel | None,
) -> None:
    try:
        history = client.sales(
            store_id, as_of - dt.timedelta(days=7 * weeks - 1), as_of, product_id
        )
    except ApiError as error:
        page_context.stop_on(error)
    forecast: responses.SeriesForecast | None = None
    try:
        forecast = client.forecast(store_id, horizon_days, product_id)
    except ModelUnavailableError as error:
        st.info(
            f"**No forecast yet:** {error}. Train a model with `sfmlops train`, or retrain "
            "this store on the right.",
            icon=":material/model_training:",
        )
    except NotFoundError as error:
        st.warning(f"**No forecast for this series:** {error}", icon=":material/search_off:")
    except ApiError as error:
        st.error(f"**The forecast failed:** {error}", icon=":material/error:")

    frame = chart_frame(history.days, forecast.forecast if forecast else [])
    title = f"Store {store_id} · {product_id}: last {weeks} weeks"
    if forecast:
        title += f", next {forecast.days} days"
    st.altair_chart(store_chart(frame, title), width="stretch")
    if forecast:
        notes = [f"Forecast by model version {forecast.model_version} from {forecast.start}."]
        if champion and champion.version != forecast.model_version:
            notes.append(
                f"Version {champion.version} is the champion now; the API serves it within "
                "its polling interval."
            )
        if forecast.assumptions:
            notes.append(f"Assumed for the forecast days: {'; '.join(forecast.assumptions)}.")
        st.caption(" ".join(notes))
    closed = int(closed_days(frame).sum())
    if closed:
        st.caption(
            f"Grey columns: {counted(closed, 'closed day')}, in the history and where the "
            "forecast expects the store closed (no sales)."
        )
    with st.expander("Chart data"):
        st.table(chart_table(frame))


def _model_panel(
    client: ApiClient, store_id: int, product_id: str, serving_version: str | None
) -> responses.ChampionModel | None:
    """The champion version, when it was trained, and this store's backtest."""
    st.subheader("Model")
    try:
        champion = client.champion(store_id, product_id)
    except (NotFoundError, ModelUnavailableError) as error:
        if serving_version is None:
            st.info(
                "**No model trained yet.** Train one with `sfmlops train`, or retrain this "
                "store below.",
                icon=":material/model_training:",
            )
        else:
            st.info(
                f"**Not in the champion model (version {serving_version}).** {error}. "
                "A full training job (`sfmlops train`) adds it.",
                icon=":material/model_training:",
            )
        return None
    except ApiError as error:
        st.error(f"**Model details unavailable:** {error}", icon=":material/error:")
        return None
    st.metric("Model version", champion.version)
    st.caption(
        f"Trained {champion.trained_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC on sales up to "
        f"{champion.last_date}"
    )
    series = next((s for s in champion.stores if s.store_id == store_id), None)
    if series is None:  # the API answered for another series: nothing to show for this one
        return champion
    st.metric(
        "Backtest RMSPE, this store",
        "n/a" if series.rmspe is None else f"{series.rmspe:.1%}",
        help="Root mean squared percentage error on the last backtest window (open days).",
    )
    st.caption(f"Champion model for this store: **{series.model}**")
    by_model = pd.DataFrame(
        sorted(series.rmspe_by_model.items(), key=lambda item: (item[1] is None, item[1] or 0.0)),
        columns=[columns.MODEL, metrics.RMSPE],
    )
    st.dataframe(
        by_model,
        hide_index=True,
        column_config={metrics.RMSPE: st.column_config.NumberColumn("RMSPE", format="percent")},
    )
    overall = champion.metrics
    st.caption(
        f"All stores: RMSPE {_percent(overall.rmspe)}, MAPE {_percent(overall.mape)}, "
        f"80 % interval coverage {_percent(overall.coverage_80)}, "
        f"95 % {_percent(overall.coverage_95)}"
    )
    _realized(client, store_id)
    return champion


def _realized(client: ApiClient, store_id: int) -> None:
    """The backtest's promise against what happened: the store's forecasts as issued, scored
    against its actuals, overall and by the model version that issued them."""
    try:
        accuracy = client.accuracy(REALIZED_DAYS, store_id)
    except ApiError as error:
        st.caption(f"Realized accuracy unavailable: {error}")
        return
    if not accuracy.overall.days or accuracy.overall.rmspe is None:
        st.caption(f"No forecast of this store scored in the last {REALIZED_DAYS} days yet.")
        return
    st.metric(
        f"Realized RMSPE, last {REALIZED_DAYS} days",
        f"{accuracy.overall.rmspe:.1%}",
        help=f"The forecasts as issued against the actuals of {accuracy.start} to "
        f"{accuracy.end} (open days), every horizon.",
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "model version": row.model_version,
                    metrics.RMSPE: row.rmspe,
                    "forecasts": row.days,
                }
                for row in accuracy.by_version
            ]
        ),
        hide_index=True,
        column_config={metrics.RMSPE: st.column_config.NumberColumn("RMSPE", format="percent")},
    )


def _retrain(
    client: ApiClient,
    store_id: int,
    product_id: str,
    serving_version: str | None,
    retrainable: bool,
) -> None:
    watch: RetrainWatch | None = st.session_state.get(WATCH_KEY)
    busy = watch is not None and watch.store_id == store_id
    if st.button(
        "Retrain this store",
        disabled=busy or not retrainable,
        icon=":material/model_training:",
        help="Refit this store's models on its latest sales; other stores keep theirs."
        if retrainable
        else "The champion has no models for this store: a full training job adds it.",
    ):
        try:
            job = client.submit_training_job([store_id], user=signed_in_user())
        except ApiError as error:
            st.error(f"**Could not start the retrain:** {error}", icon=":material/error:")
        else:
            st.session_state[WATCH_KEY] = RetrainWatch(
                job.id, store_id, product_id, serving_version
            )
    if st.session_state.get(WATCH_KEY) is not None:
        _retrain_progress()


@st.fragment(run_every=RETRAIN_POLL_SECONDS)
def _retrain_progress() -> None:
    """Follow the retrain until its version serves, then redraw the page with it."""
    watch: RetrainWatch | None = st.session_state.get(WATCH_KEY)
    if watch is None:
        return
    client = page_context.api_client()
    try:
        job = client.training_job(watch.job_id)
    except ApiError as error:
        st.warning(f"Cannot follow training job {watch.job_id[:12]}: {error}")
        return
    label = f"Retraining store {watch.store_id} (job {job.id[:12]})"
    if JobStatus(job.status).active:
        done, total = job.progress_done, job.progress_total
        st.progress(
            done / total if total else 0.0,
            text=f"{label}: {job.status}" + (f", {done} of {total} steps" if total else ""),
        )
        return
    if job.status == "failed":
        st.error(
            f"**{label} failed.** {job.error or 'The job recorded no error.'}",
            icon=":material/error:",
        )
        _dismiss_button()
        return
    try:
        serving = client.champion(watch.store_id, watch.product_id).version
    except ApiError:
        serving = None
    if job.model_version is not None and serving == job.model_version:
        del st.session_state[WATCH_KEY]
        st.session_state[NEWS_KEY] = (
            f"Store {watch.store_id} retrained: model version {serving} is live"
            + (f" (was {watch.previous_version})." if watch.previous_version else ".")
        )
        st.rerun()
    st.info(
        f"{label} finished: version {job.model_version or '(none)'} registered. Waiting for it "
        f"to become the champion (now {serving or 'none'}); a version that backtests worse than "
        "the champion stays the challenger.",
        icon=":material/hourglass_top:",
    )
    if job.error:
        st.caption(job.error)
    _dismiss_button()


def _dismiss_button() -> None:
    if st.button("Dismiss", key="dismiss_retrain"):
        del st.session_state[WATCH_KEY]
        st.rerun()


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    render()
