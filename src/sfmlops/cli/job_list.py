"""`sfmlops jobs`: recent training jobs."""

from __future__ import annotations

import typer
from rich.table import Table

from sfmlops.adapters import job_runners
from sfmlops.adapters.db import training_job_records
from sfmlops.cli.context import console, migrated_engine_of, settings_of
from sfmlops.services import training_jobs


def list_jobs(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="How many jobs to show."),
) -> None:
    """List recent training jobs, newest first, with status and progress."""
    engine = migrated_engine_of(ctx)
    runner = job_runners.make_runner(settings_of(ctx))
    with engine.connect() as connection:
        jobs = training_job_records.list_training_jobs(connection, limit)
    table = Table(
        "job",
        "status",
        "runner",
        "stores",
        "progress",
        "created",
        "model version",
        "reason",
        "error",
    )
    for job in (training_jobs.refresh_job(engine, runner, job) for job in jobs):
        stores = "all" if job.stores is None else ", ".join(map(str, job.stores[:5]))
        table.add_row(
            job.id[:12],
            job.status,
            job.runner,
            stores + (" ..." if job.stores and len(job.stores) > 5 else ""),
            f"{job.progress_done}/{job.progress_total}",
            f"{job.created_at:%Y-%m-%d %H:%M:%S}",
            job.model_version or "",
            (job.reason or "")[:60],
            (job.error or "")[:60],
        )
    console.print(table if jobs else "No training jobs yet.")
