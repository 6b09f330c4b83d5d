"""Store page: a store's recent sales beside its forecast, the model's accuracy, a retrain.

A retrain started here is followed at the top of the page, full width, from the click on:
its steps until the API serves the new version, then the series before and after it.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from sfmlops.core import columns
from sfmlops.core.forecasting import metrics
from sfmlops.core.forecasting.backtest import HORIZON_DAYS
from sfmlops.core.job_status import JobStatus
from sfmlops.ui import page_context, responses
from sfmlops.ui.charts import (
    BANDS_NOTE,
    chart_csv,
    chart_frame,
    chart_table,
    closed_days,
    store_chart,
)
from sfmlops.ui.client import (
    ApiClient,
    ApiError,
    ModelUnavailableError,
    NotFoundError,
)
from sfmlops.ui.login import signed_in_user
from sfmlops.ui.retrain_feedback import (
    RetrainResult,
    RetrainStep,
    RetrainWatch,
    comparison_table,
    retrain_steps,
    take_snapshot,
)
from sfmlops.ui.wording import counted

DEFAULT_HISTORY_WEEKS = 8
MAX_HISTORY_WEEKS = 52
DEFAULT_HORIZON_DAYS = 14
# The intervals are calibrated on backtests of this horizon; further out they are guesses.
MAX_HORIZON_DAYS = HORIZON_DAYS
# How often a followed retrain is asked after: a GET of the job, cheap for the API.
RETRAIN_POLL_SECONDS = 1.0
# Session keys.
STORE_KEY = "store_id"
PRODUCT_KEY = "product_id"
WEEKS_KEY = "history_weeks"
HORIZON_INPUT_KEY = "horizon_days_input"
HORIZON_KEY = "horizon_days"  # the horizon last asked for with "Forecast next N days"
# Days of realized accuracy the model panel shows.
REALIZED_DAYS = 28
WATCH_KEY = "retrain_watch"  # the RetrainWatch of a retrain being followed
RESULT_KEY = "retrain_result"  # the RetrainResult of the last one served, until dismissed
SUBMIT_ERROR_KEY = "retrain_submit_error"
MODELS_KEY = "retrain_models"  # the model set the next retrain chooses among; empty: the champion's
STEP_ICONS = {
    "done": ":material/check_circle:",
    "current": ":material/pending:",
    "pending": ":material/radio_button_unchecked:",
    "failed": ":material/cancel:",
}


def render() -> None:
    client = page_context.api_client()
    st.title("Store forecast")
    _retrain_status()
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

    chart_column, model_column = st.columns([3, 1], gap="large")
    with model_column:
        champion = _model_panel(client, store_id, product_id, status.champion_version)
        # A store retrain refits a series inside the champion (or, before any champion,
        # trains that store alone); stores the champion lacks need a full training job.
        retrainable = champion is not None or status.champion_version is None
        _retrain_button(store_id, product_id, retrainable, status.trainable_models)
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
    # The forecast can take seconds (a cold model cache, a long horizon): say so meanwhile.
    with st.spinner(f"Loading store {store_id}'s sales and forecast…"):
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
            page_context.show_part_failed("The forecast failed", error)

    frame = chart_frame(history.days, forecast.forecast if forecast else [])
    title = f"Store {store_id} · {product_id}: last {weeks} weeks"
    if forecast:
        title += f", next {forecast.days} days"
    st.altair_chart(store_chart(frame, title), width="stretch")
    if forecast:
        notes = [
            BANDS_NOTE,
            f"Forecast by model version {forecast.model_version} from {forecast.start}.",
        ]
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
    st.download_button(
        "Download CSV",
        chart_csv(frame),
        file_name=f"store-{store_id}-{product_id}.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",  # a download needs no rerun of the page
        help="The chart's days: actual sales, the forecast and its 80 % and 95 % intervals.",
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
        page_context.show_part_failed("Model details unavailable", error)
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
    coverage = (
        "interval coverage not measured (the backtest's models saw too little history to "
        "calibrate intervals on)"
        if overall.coverage_80 is None and overall.coverage_95 is None
        else f"80 % interval coverage {_percent(overall.coverage_80)}, "
        f"95 % {_percent(overall.coverage_95)}"
    )
    st.caption(
        f"All stores: RMSPE {_percent(overall.rmspe)}, MAPE {_percent(overall.mape)}, {coverage}"
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


def _retrain_button(
    store_id: int, product_id: str, retrainable: bool, trainable_models: list[str]
) -> None:
    """Starts a retrain of this store; its progress shows at the top of the page."""
    watch: RetrainWatch | None = st.session_state.get(WATCH_KEY)
    if watch is not None:
        why = f"The retrain of store {watch.store_id} is still running: see the top of the page."
    elif retrainable:
        why = "Refit this store's models on its latest sales; other stores keep theirs."
    else:
        why = "The champion has no models for this store: a full training job adds it."
    # The API's list: a model it cannot serve (Prophet, where its image lacks the extra) is
    # not offered.
    models: list[str] = st.multiselect(
        "Models to choose among",
        trainable_models,
        key=MODELS_KEY,
        disabled=watch is not None or not retrainable,
        placeholder="The champion's own models",
        help="The store's champion is picked among these on its backtest. Prophet, a "
        "per-store model, is fitted for this store when the champion lacks it; gbm is one "
        "model of all stores that only a full training job refits, so it competes with its "
        "last score. None chosen: the champion's own models.",
    )
    st.button(
        "Retrain this store",
        disabled=watch is not None or not retrainable,
        icon=":material/model_training:",
        help=why,
        on_click=_submit_retrain,
        args=(store_id, product_id, tuple(models)),
    )


def _submit_retrain(store_id: int, product_id: str, models: tuple[str, ...] = ()) -> None:
    """The button's callback: runs before the page, so the page it draws shows the job.

    The series is read first, as the "before" of the comparison shown when it is served.
    """
    client = page_context.api_client()
    before = take_snapshot(client, store_id, product_id)
    try:
        job = client.submit_training_job(
            [store_id], user=signed_in_user(), models=list(models) or None
        )
    except ApiError as error:
        st.session_state[SUBMIT_ERROR_KEY] = f"**Could not start the retrain:** {error}"
        return
    st.session_state.pop(RESULT_KEY, None)
    st.session_state[WATCH_KEY] = RetrainWatch(
        job.id, store_id, product_id, before, submitted_at=dt.datetime.now(dt.UTC)
    )


def _retrain_status() -> None:
    """The top of the page: a retrain that could not start, one running, or its outcome."""
    error = st.session_state.pop(SUBMIT_ERROR_KEY, None)
    if error:
        st.error(error, icon=":material/error:")
    if st.session_state.get(WATCH_KEY) is not None:
        _retrain_progress()
    result: RetrainResult | None = st.session_state.get(RESULT_KEY)
    if result is not None:
        _retrain_outcome(result)


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
        _dismiss_button(WATCH_KEY)
        return
    serving: str | None = None
    if job.status == "succeeded":
        try:
            serving = client.champion(watch.store_id, watch.product_id).version
        except ApiError:
            serving = None
    seconds = (dt.datetime.now(dt.UTC) - watch.submitted_at).total_seconds()
    if job.model_version is not None and serving == job.model_version:
        st.session_state[RESULT_KEY] = RetrainResult(
            job.id,
            watch.store_id,
            watch.product_id,
            watch.before,
            take_snapshot(client, watch.store_id, watch.product_id),
            seconds,
        )
        del st.session_state[WATCH_KEY]
        st.rerun()  # the whole page: the chart and the model panel with the new version
    steps = retrain_steps(job, serving, watch.store_id)
    label = f"Retraining store {watch.store_id} (job {job.id[:12]})"
    with st.container(border=True):
        if job.status == "failed":
            st.error(
                f"**{label} failed.** {job.error or 'The job recorded no error.'}",
                icon=":material/error:",
            )
        else:
            st.progress(_steps_done(steps, job), text=f"{label}: {job.status}, {seconds:.0f} s")
        st.markdown("  \n".join(f"{STEP_ICONS[step.state]} {step.label}" for step in steps))
        if job.status == "succeeded":
            st.info(
                f"Version {job.model_version or '(none)'} registered; the API serves "
                f"{serving or 'no champion'}. A version that backtests worse than the champion "
                "stays the challenger.",
                icon=":material/hourglass_top:",
            )
            if job.error:
                st.caption(job.error)
        if not JobStatus(job.status).active:
            _dismiss_button(WATCH_KEY)


def _steps_done(steps: list[RetrainStep], job: responses.TrainingJob) -> float:
    """The share of the steps done, the training step counted by its own progress."""
    done = float(sum(step.state == "done" for step in steps))
    if job.status == "running" and job.progress_total:
        done += min(job.progress_done / job.progress_total, 1.0)
    return min(done / len(steps), 1.0)


def _retrain_outcome(result: RetrainResult) -> None:
    """The retrained series before and after: version, model, backtest, next week."""
    with st.container(border=True):
        st.success(
            f"Store {result.store_id} retrained: model version {result.after.version} is live"
            + (f" (was {result.before.version})." if result.before.version else "."),
            icon=":material/check_circle:",
        )
        st.table(comparison_table(result.before, result.after).set_index(""))
        st.caption(
            f"Served {result.seconds:.0f} s after the click (job {result.job_id[:12]}). "
            "Backtest RMSPE: the last backtest window, open days; lower is better."
        )
        _dismiss_button(RESULT_KEY)


def _dismiss_button(key: str) -> None:
    if st.button("Dismiss", key=f"dismiss_{key}"):
        st.session_state.pop(key, None)
        st.rerun()


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    render()
