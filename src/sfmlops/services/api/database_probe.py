"""A bounded database ping for readiness: answers within its timeout even when the server hangs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

PING_TIMEOUT_SECONDS = 2.0


class DatabaseProbe:
    """Runs `SELECT 1` on each engine, on one background thread, and waits at most
    `timeout_seconds` for them all.

    A ping that hangs (a stopped server, a lost network) is not repeated while it hangs: later
    checks wait on the same one, so a probe every few seconds never piles up threads.

    Args:
        engines: Returns the engines to ping by the name an answer gives them, e.g.
            `{"database": writer, "read-only database": reader}`.
        timeout_seconds: Longest wait for every ping together.
    """

    def __init__(
        self,
        engines: Callable[[], Mapping[str, Engine]],
        timeout_seconds: float = PING_TIMEOUT_SECONDS,
    ) -> None:
        self._engines = engines
        self.timeout_seconds = timeout_seconds
        self._executor: ThreadPoolExecutor | None = None  # made on first use, after each close
        self._pending: Future[None] | None = None
        self._pinging = "database"  # the name of the engine being pinged, for one that hangs
        self._lock = threading.Lock()

    def problem(self) -> str | None:
        """None when every database answered in time, else why not (naming which)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="database-probe")
            if self._pending is None or self._pending.done():
                self._pending = self._executor.submit(self._ping)
            pending = self._pending
        try:
            pending.result(timeout=self.timeout_seconds)
        except FutureTimeoutError:
            return f"{self._pinging} did not answer within {self.timeout_seconds:g} s"
        except SQLAlchemyError as error:
            return f"{self._pinging} unreachable: {error.__class__.__name__}"
        return None

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor, self._pending = None, None

    def _ping(self) -> None:
        for name, engine in self._engines().items():
            self._pinging = name
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
