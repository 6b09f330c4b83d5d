"""Where training tasks run: an injected executor maps a function over task items.

Per-store models are fitted in chunks of stores, one task per chunk; the global model is one
task. A distributed backend (e.g. Ray) only has to provide `map`.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Protocol, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Executor(Protocol):
    """Runs `function` on every item and returns the results in the items' order."""

    @property
    def cpus_per_task(self) -> float:
        """How many CPUs one task may keep busy (a model fit's threads)."""
        ...

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
        """Apply `function` to each item (functions and items must be picklable)."""
        ...


class SequentialExecutor:
    """Runs tasks one after another in this process.

    Attributes:
        cpus_per_task: Every CPU: one task runs at a time.
    """

    def __init__(self) -> None:
        self.cpus_per_task = os.cpu_count() or 1

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
        """Apply `function` to each item in turn."""
        return [function(item) for item in items]


class ProcessPoolTaskExecutor:
    """Runs tasks in a pool of local worker processes (one pool per `map` call).

    Workers are spawned, not forked: a fork of a process whose OpenMP runtime (LightGBM's)
    has started threads can hang, and a forked worker of a process holding a large history
    would report that history in its RSS too.

    Attributes:
        cpus_per_task: The CPUs each task may use with all workers busy (a model fitting
            with its own threads should use no more).
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.cpus_per_task = max(1, (os.cpu_count() or 1) // self.workers)

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
        """Apply `function` to each item in worker processes; falls back to in-process for one.

        Items are taken from `items` as workers free up, so a generator of large items (a
        shard's history each) holds only those in flight, not all of them at once.
        """
        iterator = iter(items)
        ahead = list(itertools.islice(iterator, 2))
        if len(ahead) < 2 or self.workers == 1:
            return [function(item) for item in itertools.chain(ahead, iterator)]
        futures: list[Future[Result]] = []
        with ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            for item in itertools.chain(ahead, iterator):
                running = [future for future in futures if not future.done()]
                if len(running) >= self.workers:
                    wait(running, return_when=FIRST_COMPLETED)
                futures.append(pool.submit(function, item))
            return [future.result() for future in futures]


def chunks(items: Sequence[Item], size: int) -> list[list[Item]]:
    """`items` in consecutive lists of at most `size`."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [list(items[start : start + size]) for start in range(0, len(items), size)]
