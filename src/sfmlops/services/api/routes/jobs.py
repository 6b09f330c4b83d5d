"""Training jobs: submitted to the configured runner, never run inside a request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status

from sfmlops.adapters.db import repository
from sfmlops.services import training_jobs
from sfmlops.services.api import schemas
from sfmlops.services.api.deps import EngineDep, TokenDep

router = APIRouter(prefix="/v1/training-jobs", tags=["training"])


def _runner(request: Request) -> training_jobs.JobRunner:
    # One runner per app: the local runner keeps its child processes to reap them.
    if getattr(request.app.state, "job_runner", None) is None:
        request.app.state.job_runner = training_jobs.make_runner(request.app.state.settings)
    runner: training_jobs.JobRunner = request.app.state.job_runner
    return runner


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.TrainingJob,
    dependencies=[TokenDep],
    responses={
        401: {"model": schemas.ErrorBody},
        404: {"model": schemas.ErrorBody},
        503: {"model": schemas.ErrorBody},
    },
    summary="Start a training job",
)
def submit(
    body: schemas.TrainingJobRequest, request: Request, engine: EngineDep
) -> schemas.TrainingJob:
    """Queue a job that trains the given stores (or all) and registers a new model version."""
    if body.stores:
        with engine.connect() as connection:
            unknown = sorted(set(body.stores) - repository.store_ids(connection))
        if unknown:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"unknown store(s): {', '.join(map(str, unknown[:20]))}"
            )
    try:
        submitted = training_jobs.submit_training_job(engine, _runner(request), body.stores)
    except (RuntimeError, ValueError) as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from error
    return _get(engine, request, submitted.id)


@router.get(
    "", response_model=schemas.TrainingJobList, summary="Recent training jobs, newest first"
)
def list_jobs(
    request: Request, engine: EngineDep, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> schemas.TrainingJobList:
    with engine.connect() as connection:
        jobs = repository.list_training_jobs(connection, limit)
    runner = _runner(request)
    return schemas.TrainingJobList(
        jobs=[
            schemas.TrainingJob.model_validate(training_jobs.refresh_job(engine, runner, job))
            for job in jobs
        ]
    )


@router.get(
    "/{job_id}",
    response_model=schemas.TrainingJob,
    responses={404: {"model": schemas.ErrorBody}},
    summary="A training job's status and progress",
)
def get_job(job_id: str, request: Request, engine: EngineDep) -> schemas.TrainingJob:
    return _get(engine, request, job_id)


def _get(engine: EngineDep, request: Request, job_id: str) -> schemas.TrainingJob:
    with engine.connect() as connection:
        job = repository.get_training_job(connection, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown training job {job_id}")
    return schemas.TrainingJob.model_validate(
        training_jobs.refresh_job(engine, _runner(request), job)
    )
