"""A PostgreSQL cluster of one test's own (scripts/postgres.sh), which the test may SIGKILL.

The session's server is shared by every test of a worker; a test that kills its database
starts this one instead, so the kill touches nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT

POSTGRES = ROOT / "scripts" / "postgres.sh"


@dataclass
class KillablePostgres:
    """A running cluster in `folder` on `port`; `url` names its database "sfmlops"."""

    folder: Path
    port: int
    url: str

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once, as an out-of-memory kill would."""
        postmaster = int((self.folder / "data" / "postmaster.pid").read_text().split()[0])
        victims = [postmaster, *_children(postmaster)]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in victims):
            assert time.monotonic() < deadline, "PostgreSQL did not die"
            time.sleep(0.1)
        # A killed postmaster whose parent is gone may stay a zombie here (nobody reaps it),
        # and PostgreSQL takes a zombie's pid for a live server; a restarted container starts
        # in a fresh pid namespace and never sees it.
        if _zombie(postmaster):
            (self.folder / "data" / "postmaster.pid").unlink()
            (self.folder / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)

    def restart(self) -> None:
        """Start the server again on the same data folder and port (crash recovery runs)."""
        result = subprocess.run(
            [str(POSTGRES), "resume", str(self.folder), str(self.port)],
            capture_output=True, text=True, env=_environment(), check=False,
        )  # fmt: skip
        log = (self.folder / "server.log").read_text()[-3000:]
        assert result.returncode == 0, result.stdout + result.stderr + log


@contextmanager
def killable_postgres(port: int) -> Iterator[KillablePostgres]:
    """Start a fresh cluster on `port`; stop and remove it on exit."""
    parent = Path(tempfile.mkdtemp(prefix="sfmlops-pg-faults-"))
    parent.chmod(0o755)  # the cluster runs as "postgres" when the tests run as root
    folder = parent / "cluster"
    url = subprocess.run(
        [str(POSTGRES), "start", str(folder), str(port)],
        check=True, capture_output=True, text=True, env=_environment(),
    ).stdout.strip()  # fmt: skip
    try:
        yield KillablePostgres(folder, port, url)
    finally:
        subprocess.run([str(POSTGRES), "stop", str(folder)], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", str(parent)], check=False)


def _environment() -> dict[str, str]:
    # A small cache: the cluster holds one test's data, and several tests' clusters may run.
    return os.environ | {"SFMLOPS_PG_SHARED_BUFFERS": "128MB"}


def _children(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
