"""Training jobs: submitted to the configured runner, never run inside a request.

Answering about a job that succeeded also brings this worker's champion up to date (see
`ModelCache.catch_up_with`): whoever learns that a job succeeded asks for its model next.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from sqlalchemy import Engine

from sfmlops.adapters import job_runners
from sfmlops.adapters.db import audit, store_records, training_job_records
from sfmlops.adapters.db.training_job_records import TrainingJob
from sfmlops.core.forecasting.models import MODEL_EXTRAS, MODEL_NAMES, model_installed
from sfmlops.core.validation import shortened
from sfmlops.services import training_jobs
from sfmlops.services.api import schemas
from sfmlops.services.api.deps import (
    CallerDep,
    ModelCacheDep,
    ReadEngineDep,
    SettingsDep,
    WriteEngineDep,
    record_write,
)
from sfmlops.services.api.model_cache import ModelCache

router = APIRouter(prefix="/v1/training-jobs", tags=["training"])
SUBMIT = "training_job.submit"  # the audit action, also what the retrain limit counts
RATE_WINDOW = dt.timedelta(hours=1)


def _runner(request: Request) -> job_runners.JobRunner:
    # One runner per app: the local runner keeps its child processes to reap them.
    if getattr(request.app.state, "job_runner", None) is None:
        request.app.state.job_runner = job_runners.make_runner(request.app.state.settings)
    runner: job_runners.JobRunner = request.app.state.job_runner
    return runner


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.TrainingJob,
    responses={
        401: {"model": schemas.ErrorBody},
        403: {"model": schemas.ErrorBody},
        404: {"model": schemas.ErrorBody},
        409: {"model": schemas.ErrorBody},
        422: {"model": schemas.ErrorBody},
        429: {"model": schemas.ErrorBody},
        503: {"model": schemas.ErrorBody},
    },
    summary="Start a training job",
)
def submit(
    body: schemas.TrainingJobRequest,
    request: Request,
    engine: WriteEngineDep,
    settings: SettingsDep,
    caller: CallerDep,
    cache: ModelCacheDep,
) -> schemas.TrainingJob:
    """Queue a job that trains the given stores (or all) and registers a new model version.

    `models` chooses the model set (names checked: an unknown one answers 422, nothing starts).

    Each user (the dashboard's signed-in user, else the token) may start
    SFMLOPS_RETRAIN_LIMIT_PER_HOUR jobs in any hour; more answer 429 with Retry-After.
    """
    # A model this API cannot forecast with would train a champion it cannot serve.
    unservable = [name for name in body.models or () if not model_installed(name)]
    if unservable:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"this API cannot serve {', '.join(unservable)} forecasts (its environment lacks "
            f"the {', '.join(MODEL_EXTRAS[name] for name in unservable)} extra); choose among "
            f"{', '.join(name for name in MODEL_NAMES if model_installed(name))}",
        )
    _check_retrain_limit(engine, caller.name, settings.retrain_limit_per_hour)
    if body.store_ids:
        with engine.connect() as connection:
            unknown = sorted(set(body.store_ids) - store_records.store_ids(connection))
        if unknown:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"unknown store(s): {', '.join(map(str, unknown[:20]))}"
            )
    try:
        submitted = training_jobs.submit_training_job(
            engine, _runner(request), body.store_ids, body.reason, body.models
        )
    except training_jobs.JobConflictError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error
    except (RuntimeError, ValueError) as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from error
    record_write(
        request,
        engine,
        SUBMIT,
        {
            "job_id": submitted.id,
            "stores": body.store_ids,
            "reason": body.reason,
            "models": body.models,
        },
    )
    return _get(engine, engine, request, cache, submitted.id)


def _check_retrain_limit(engine: Engine, actor: str, per_hour: int) -> None:
    now = dt.datetime.now(dt.UTC)
    with engine.connect() as connection:
        started = audit.count_since(connection, actor, SUBMIT, now - RATE_WINDOW)
        if started < per_hour:
            return
        oldest = audit.oldest_since(connection, actor, SUBMIT, now - RATE_WINDOW)
    wait = (oldest + RATE_WINDOW - now) if oldest else RATE_WINDOW
    seconds = max(1, int(wait.total_seconds()) + 1)
    raise HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"{actor} started {started} training jobs in the last hour, the limit is {per_hour}; "
        f"try again in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


@router.get(
    "", response_model=schemas.TrainingJobList, summary="Recent training jobs, newest first"
)
def list_jobs(
    request: Request,
    read_engine: ReadEngineDep,
    write_engine: WriteEngineDep,
    cache: ModelCacheDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> schemas.TrainingJobList:
    with read_engine.connect() as connection:
        jobs = training_job_records.list_training_jobs(connection, limit)
    return schemas.TrainingJobList(
        jobs=[_answer(write_engine, request, cache, job) for job in jobs]
    )


@router.get(
    "/{job_id}",
    response_model=schemas.TrainingJob,
    responses={404: {"model": schemas.ErrorBody}},
    summary="A training job's status and progress",
)
def get_job(
    job_id: str,
    request: Request,
    read_engine: ReadEngineDep,
    write_engine: WriteEngineDep,
    cache: ModelCacheDep,
) -> schemas.TrainingJob:
    return _get(read_engine, write_engine, request, cache, job_id)


def _get(
    read_engine: Engine, write_engine: Engine, request: Request, cache: ModelCache, job_id: str
) -> schemas.TrainingJob:
    with read_engine.connect() as connection:
        job = training_job_records.get_training_job(connection, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown training job {shortened(job_id)}")
    return _answer(write_engine, request, cache, job)


def _answer(
    write_engine: Engine, request: Request, cache: ModelCache, job: TrainingJob
) -> schemas.TrainingJob:
    """A job as it stands (a dead process found out, which is written through
    `write_engine`), with the champion caught up to it."""
    job = training_jobs.refresh_job(write_engine, _runner(request), job)
    cache.catch_up_with(job)
    return schemas.TrainingJob.model_validate(job, from_attributes=True)
