"""Test-only hooks of the stream job: the process kills itself at a chosen micro-batch.

The restart tests (tests/streaming) set one of these variables on a `sfmlops stream` run to
crash it where a real crash would hurt most; no deployment sets them, so they are read here,
from the environment, and are not part of `Settings`:

- `SFMLOPS_STREAM_FAULT_AFTER_COMMIT=N`: SIGKILL right after batch N is committed.
- `SFMLOPS_STREAM_FAULT_BEFORE_COMMIT=N`: SIGKILL inside batch N's transaction, once Spark has
  moved on to the next batch (its checkpoint already counts batch N as done).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

AFTER_COMMIT_VARIABLE = "SFMLOPS_STREAM_FAULT_AFTER_COMMIT"
BEFORE_COMMIT_VARIABLE = "SFMLOPS_STREAM_FAULT_BEFORE_COMMIT"
# How long a before-commit crash waits for Spark to move on before killing anyway.
MOVED_ON_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class StreamFaultHooks:
    """Where the stream process kills itself; None (the default) injects nothing.

    Attributes:
        after_commit: The batch id after whose commit the process dies.
        before_commit: The batch id inside whose transaction the process dies.
    """

    after_commit: int | None = None
    before_commit: int | None = None
    _moved_on: threading.Event = field(default_factory=threading.Event, compare=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> StreamFaultHooks:
        """The hooks the environment asks for.

        Raises:
            ValueError: A variable is set but is not a batch id (an integer >= 0).
        """
        environ = os.environ if environ is None else environ
        return cls(
            after_commit=_batch_id(environ, AFTER_COMMIT_VARIABLE),
            before_commit=_batch_id(environ, BEFORE_COMMIT_VARIABLE),
        )

    def batch_received(self, batch_id: int) -> None:
        """Spark handed over `batch_id`: a batch past the before-commit one means it moved on."""
        if self.before_commit is not None and batch_id > self.before_commit:
            self._moved_on.set()

    def before_commit_of(self, batch_id: int) -> None:
        """Called inside the batch's transaction, before it commits."""
        if batch_id == self.before_commit:
            self._moved_on.wait(MOVED_ON_WAIT_SECONDS)
            os.kill(os.getpid(), signal.SIGKILL)

    def after_commit_of(self, batch_id: int) -> None:
        """Called once the batch has committed."""
        if batch_id == self.after_commit:
            os.kill(os.getpid(), signal.SIGKILL)


def _batch_id(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ValueError(f"{name}: {value!r} is not a micro-batch id (an integer >= 0)")
    return int(value)
