"""The champion held in memory: loaded at start-up, swapped when the `champion` alias moves.

The served forecasts use the stored plan of known future covariates: a poll that finds the
plan changed (or `refresh` after a write) rebuilds them, predicting again only the series of
the states where a store's plan changed. Requests read `ModelCache.state`, one reference to an immutable
`CacheState`. A poller thread builds the next state completely (download, load, precompute
the default horizon) before it replaces that reference, so a request sees the old model or
the new one, never half of one. When the registry cannot be reached the loaded model keeps
serving and the state says why it is degraded.

A new champion comes from a training job, so the poller watches the `training_jobs` table
(one small query a tick): while a job is queued or running, or when one succeeded since the
last check, it checks the registry every `model_poll_training_seconds`; otherwise every
`model_poll_seconds`. Each worker of a multi-worker server polls on its own, so they all
catch up within one short tick of a job's end.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sfmlops.adapters import mlflow_client_env
from sfmlops.adapters import mlflow_registry as registry
from sfmlops.adapters.db import issued_forecasts, plan_records, training_job_records
from sfmlops.adapters.db.training_job_records import TrainingJob
from sfmlops.core.forecasting.bundle import ForecastBundle
from sfmlops.core.forecasting.bundle_signature import BundleSignatureError
from sfmlops.core.forecasting.plan import PlanByStore, by_store
from sfmlops.core.job_status import JobStatus
from sfmlops.services.api import serving
from sfmlops.services.api.serving import ServedModel, prepare
from sfmlops.services.model_training import version_folder
from sfmlops.services.status import as_of_date
from sfmlops.settings import Settings

log = logging.getLogger("sfmlops.api.models")

NO_CHAMPION = "no champion model yet: run sfmlops train"


@dataclass(frozen=True)
class CacheState:
    """What the API serves right now.

    Attributes:
        model: The loaded champion, or None.
        problem: Why there is no model, or why the loaded one may be stale (registry
            unreachable); None when all is well.
    """

    model: ServedModel | None
    problem: str | None


@dataclass(frozen=True)
class TrainingActivity:
    """What the `training_jobs` table says about training, as the poller reads it.

    Attributes:
        active_jobs: Jobs queued or running.
        succeeded_jobs: Jobs that succeeded, ever: a change means one just finished.
    """

    active_jobs: int
    succeeded_jobs: int


def champion_check_due(
    activity: TrainingActivity | None,
    seen: TrainingActivity | None,
    seconds_since_check: float,
    poll_seconds: float,
) -> bool:
    """Whether the poller should check the registry for a new champion now.

    Args:
        activity: The training jobs now; None when they could not be read.
        seen: The training jobs at the last check.
        seconds_since_check: Seconds since the last check.
        poll_seconds: The longest time between two checks.

    Returns:
        True while a job is queued or running (it may move the alias any moment), when a
        job succeeded since the last check (it may have moved the alias and finished between
        two ticks), and every `poll_seconds` whatever the jobs (an alias moved by hand).
    """
    if seconds_since_check >= poll_seconds:
        return True
    if activity is None:
        return False
    return activity.active_jobs > 0 or (
        seen is not None and activity.succeeded_jobs != seen.succeeded_jobs
    )


class ModelCache:
    """Loads the champion from the registry and keeps it current.

    Args:
        settings: The process's settings (registry location, poll interval, as-of date).
        read_engine: Returns the sales database to read (the as-of date, the plan, the
            training jobs); may log in as a role that can only read.
        write_engine: Returns the sales database to write the forecasts served as issued.
        on_change: Called with the new model once requests see it (each load or swap).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        read_engine: Callable[[], Engine | None],
        write_engine: Callable[[], Engine | None],
        on_change: Callable[[ServedModel], None] | None = None,
    ) -> None:
        self._settings = settings
        self._read_engine = read_engine
        self._write_engine = write_engine
        self._on_change = on_change
        self._state = CacheState(model=None, problem="starting: the champion is being loaded")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()
        self._job_version_checked = 0  # the newest job version `catch_up_with` checked for
        self._job_version_lock = threading.Lock()
        self._activity_unreadable = False

    @property
    def state(self) -> CacheState:
        """The current state (one atomic read; hold on to it for a whole request)."""
        return self._state

    def start(self) -> None:
        """Load the champion now (blocking), then keep polling in a daemon thread."""
        mlflow_client_env.use_serving_client_env(os.environ)
        # Read before the first check, so that a job ending during it is noticed next tick.
        seen = self._training_activity()
        self.refresh()
        self._thread = threading.Thread(
            target=self._poll, args=(seen,), name="champion-poller", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (waits for a load in progress to finish)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def refresh(self) -> CacheState:
        """Check the alias once and swap in a new champion if it moved; never raises."""
        with self._refresh_lock:
            previous = self._state
            try:
                self._state = self._next_state(previous)
                if self._state.model is not None and self._state.model is not previous.model:
                    self._changed(self._state.model)
                    self._keep_as_issued(self._state.model)
            except BundleSignatureError as error:
                # A tampered or unsigned champion is never loaded; the loaded model serves on.
                problem = (
                    f"champion refused, its bundle failed the signature check: {_short(error)}"
                )
                if self._state.model is not None:
                    problem += f"; serving the loaded version {self._state.model.version}"
                log.error("champion refused: %s", problem)
                self._state = replace(self._state, problem=problem)
            except Exception as error:
                # Any failure (registry down, a broken bundle) leaves the loaded model serving.
                problem = f"model registry unreachable or failing: {_short(error)}"
                if self._state.model is not None:
                    problem += f"; serving the loaded version {self._state.model.version}"
                log.warning("champion check failed: %s", problem)
                self._state = replace(self._state, problem=problem)
            return self._state

    def catch_up_with(self, job: TrainingJob) -> CacheState:
        """Check the alias now when `job` succeeded with a version newer than the served one.

        The routes that answer about training jobs call this, so a caller told that a job
        succeeded is served its champion by this worker from then on, without waiting for
        the poller. A version is checked for once (a challenger stays a challenger): listing
        old jobs again costs nothing.
        """
        version = _version_number(job.model_version)
        if job.status is not JobStatus.SUCCEEDED or version is None:
            return self._state
        with self._job_version_lock:
            served = self._state.model
            checked = max(
                self._job_version_checked,
                (_version_number(served.version) or 0) if served is not None else 0,
            )
            if version <= checked:
                return self._state
            self._job_version_checked = version
        return self.refresh()

    def _poll(self, seen: TrainingActivity | None) -> None:
        tick = min(self._settings.model_poll_seconds, self._settings.model_poll_training_seconds)
        checked = time.monotonic()
        while not self._stop.wait(tick):
            activity = self._training_activity()
            if champion_check_due(
                activity, seen, time.monotonic() - checked, self._settings.model_poll_seconds
            ):
                self.refresh()
                checked = time.monotonic()
                seen = activity

    def _training_activity(self) -> TrainingActivity | None:
        """The training jobs now, or None when the database cannot say (logged once)."""
        engine = self._read_engine()
        if engine is None:
            return None
        try:
            with engine.connect() as connection:
                counts = training_job_records.count_training_jobs_by_status(connection)
        except SQLAlchemyError as error:
            if not self._activity_unreadable:
                log.warning(
                    "training jobs unreadable, checking for a new champion every %s s: %s",
                    self._settings.model_poll_seconds,
                    _short(error),
                )
            self._activity_unreadable = True
            return None
        self._activity_unreadable = False
        return TrainingActivity(
            active_jobs=sum(count for status, count in counts.items() if status.active),
            succeeded_jobs=counts[JobStatus.SUCCEEDED],
        )

    def _next_state(self, current: CacheState) -> CacheState:
        if not _registry_exists(self._settings):
            return CacheState(model=None, problem=NO_CHAMPION)
        client = registry.connect(self._settings)
        champion = registry.version_with_alias(client, registry.CHAMPION)
        if champion is None:
            if current.model is not None:
                # The alias was removed: keep answering rather than go dark; readiness says so.
                return CacheState(
                    current.model,
                    f"the registry has no champion any more; serving version {current.model.version}",
                )
            return CacheState(model=None, problem=NO_CHAMPION)
        loaded = current.model
        if loaded is not None and loaded.version == champion.version:
            start = self._default_start(loaded.bundle)
            revision = self._plan_revision()
            # New sales moved the as-of date, or the plan was written: the horizon's rows
            # of states whose plans are unchanged are kept (predicting every series' horizon
            # is about four fifths of preparing a champion).
            if start != loaded.default_start or revision != loaded.plan_revision:
                loaded = prepare(
                    loaded.bundle,
                    loaded.version,
                    loaded.run_id,
                    loaded.registered_at,
                    start,
                    *self._plan(loaded.bundle, revision),
                    earlier=loaded.horizon_forecasts,
                )
            return CacheState(loaded, problem=None)
        folder = version_folder(self._settings, client, champion.version)
        bundle = ForecastBundle.load(folder, signing_key=self._settings.signing_key)
        model = prepare(
            bundle,
            champion.version,
            champion.run_id,
            registry.registered_at(client, champion.version),
            self._default_start(bundle),
            *self._plan(bundle, self._plan_revision()),
            # The horizon its training job computed: only states whose plan changed since
            # are predicted here.
            earlier=serving.HorizonForecasts.load(folder),
        )
        try:
            serving.warm_up(model)
        except Exception as error:  # a slice of the horizon still answers every GET
            log.warning(
                "champion version %s failed a warm-up forecast: %s", model.version, _short(error)
            )
        log.info(
            "serving champion version %s",
            model.version,
            extra={"previous_version": current.model.version if current.model else None},
        )
        return CacheState(model, problem=None)

    def _changed(self, model: ServedModel) -> None:
        if self._on_change is not None:
            self._on_change(model)

    def _keep_as_issued(self, model: ServedModel) -> None:
        """Keep the default horizon now served in `issued_forecasts` (once per version and
        issue date, however many workers serve it), so it is scored when its days' actuals
        land. A database error is logged: serving goes on."""
        engine = self._write_engine()
        as_of = self._as_of()
        if engine is None or as_of is None:
            return
        try:
            with engine.begin() as connection:
                issued_forecasts.record_issued(
                    connection,
                    model.default_forecast,
                    model.version,
                    issue_date=as_of + dt.timedelta(days=1),
                    issued_by="api",
                )
        except SQLAlchemyError as error:
            log.warning("could not keep the default horizon as issued: %s", _short(error))

    def _plan_revision(self) -> tuple[int, str] | None:
        engine = self._read_engine()
        if engine is None:
            return None
        try:
            with engine.connect() as connection:
                return plan_records.plan_revision(connection)
        except SQLAlchemyError as error:
            log.warning("plan unavailable, forecasting with derived covariates: %s", _short(error))
            return None

    def _plan(
        self, bundle: ForecastBundle, revision: tuple[int, str] | None
    ) -> tuple[PlanByStore, tuple[int, str] | None]:
        """The stored plan from the bundle's first forecast day on, and its revision."""
        engine = self._read_engine()
        if engine is None or revision is None:
            return {}, revision
        try:
            with engine.connect() as connection:
                plan = plan_records.read_plan(connection, since=serving.first_forecast_date(bundle))
        except SQLAlchemyError as error:
            log.warning("plan unavailable, forecasting with derived covariates: %s", _short(error))
            return {}, None
        return by_store(plan), revision

    def _default_start(self, bundle: ForecastBundle) -> dt.date:
        earliest = serving.first_forecast_date(bundle)
        as_of = self._as_of()
        if as_of is None:
            return earliest
        return max(earliest, as_of + dt.timedelta(days=1))

    def _as_of(self) -> dt.date | None:
        engine = self._read_engine()
        as_of = self._settings.as_of
        if as_of is None and engine is not None:
            try:
                with engine.connect() as connection:
                    as_of = as_of_date(self._settings, connection)
            except SQLAlchemyError as error:
                log.warning("as-of date unavailable, starting after the model's data: %s", error)
        return as_of


def _registry_exists(settings: Settings) -> bool:
    """False when the embedded registry was never created (nothing trained in this HOME).

    Checked so that a fresh HOME does not create an MLflow database just to learn that
    it is empty.
    """
    uri = settings.effective_mlflow_tracking_uri
    if not uri.startswith("sqlite:///"):
        return True
    return os.path.exists(uri.removeprefix("sqlite:///"))


def _version_number(version: str | None) -> int | None:
    """A registry version as a number (MLflow numbers them 1, 2, ...), or None."""
    return int(version) if version is not None and version.isdigit() else None


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{error.__class__.__name__}: {text[:200]}"
