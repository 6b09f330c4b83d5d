"""Where training tasks run: an injected executor maps a function over task items.

Per-store models are fitted in chunks of stores, one task per chunk; the global model is one
task. A distributed backend (e.g. Ray) only has to provide `map`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Protocol, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Executor(Protocol):
    """Runs `function` on every item and returns the results in the items' order."""

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
        """Apply `function` to each item (functions and items must be picklable)."""
        ...


class SequentialExecutor:
    """Runs tasks one after another in this process."""

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
        """Apply `function` to each item in turn."""
        return [function(item) for item in items]


class ProcessPoolTaskExecutor:
    """Runs tasks in a pool of local worker processes (one pool per `map` call)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
        """Apply `function` to each item in worker processes; falls back to in-process for one."""
        tasks = list(items)
        if self.workers == 1 or len(tasks) <= 1:
            return [function(item) for item in tasks]
        with ProcessPoolExecutor(max_workers=min(self.workers, len(tasks))) as pool:
            return list(pool.map(function, tasks))


def chunks(items: Sequence[Item], size: int) -> list[list[Item]]:
    """`items` in consecutive lists of at most `size`."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [list(items[start : start + size]) for start in range(0, len(items), size)]
