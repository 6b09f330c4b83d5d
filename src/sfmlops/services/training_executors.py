"""Where a training job's fits run: Ray, a pool of local processes, or this process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sfmlops.adapters.ray_cluster import cluster_address
from sfmlops.core.forecasting.executors import (
    Executor,
    ProcessPoolTaskExecutor,
    SequentialExecutor,
)
from sfmlops.core.forecasting.models import forecaster_class
from sfmlops.settings import Settings

if TYPE_CHECKING:
    from sfmlops.services.model_training import TrainingRequest

EXECUTOR_KINDS = ("auto", "ray", "processes", "sequential")


def auto_executor(settings: Settings, request: TrainingRequest) -> str:
    """Where `--executor auto` runs a training job's fits.

    Ray when a cluster is configured (the fits go where the resources are) or when a model
    fans out over stores (Prophet); otherwise local worker processes: gbm's shards (more
    series than `GBMParams.shard_series`) fit side by side, one per CPU, 44 % faster than in
    turn on 10k series (docs/benchmarks.md), and a single fit (the bundled data) still runs
    in this process, so a local Ray's start-up and history copy are not paid. Store retrains
    fit a few series and stay in this process.
    """
    if request.store_ids:
        return "sequential"
    if cluster_address(settings) or any(
        forecaster_class(name).fans_out for name in request.full_job_models
    ):
        return "ray"
    return "processes"


@contextmanager
def executor_of(
    settings: Settings,
    kind: str,
    workers: int | None,
    on_connect: Callable[[], None] | None = None,
) -> Iterator[Executor]:
    """The executor of `kind` (one of EXECUTOR_KINDS but auto), open for the block.

    Args:
        workers: Processes (or Ray CPUs) for per-store fits; None: the CPU count.
        on_connect: Called before connecting to Ray, which can take a while.
    """
    if kind == "ray":
        from sfmlops.adapters.ray_cluster import RayExecutor, ray_session  # noqa: PLC0415

        if on_connect:
            on_connect()
        with ray_session(settings, workers):
            yield RayExecutor()
    elif kind == "processes":
        yield ProcessPoolTaskExecutor(workers)
    else:
        yield SequentialExecutor()
