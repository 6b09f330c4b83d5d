"""The local job runner tells a live job from a finished one, also for jobs an earlier process started."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psutil

from sfmlops.adapters.job_runners import LocalJobRunner
from sfmlops.settings import Settings
from tests.support.waiting import wait_until


def earlier_runner(tmp_path: Path) -> LocalJobRunner:
    """A runner that did not start the processes it is asked about (as after an API restart)."""
    return LocalJobRunner(Settings(_env_file=None, home=tmp_path))


def test_a_live_process_is_running_and_a_zombie_or_reaped_one_is_gone(tmp_path: Path) -> None:
    runner = earlier_runner(tmp_path)
    process = subprocess.Popen(["sleep", "60"])
    try:
        assert runner.state(f"pid:{process.pid}") == "running"

        process.kill()
        wait_until(
            lambda: psutil.Process(process.pid).status() == psutil.STATUS_ZOMBIE,
            timeout=10,
            what="the killed process to become a zombie",
        )
        assert runner.state(f"pid:{process.pid}") == "gone"
    finally:
        process.kill()
        process.wait()

    assert runner.state(f"pid:{process.pid}") == "gone"


def test_a_pid_now_another_process_s_is_gone(tmp_path: Path) -> None:
    submitted = LocalJobRunner(Settings(_env_file=None, home=tmp_path)).submit("job", ["--help"])
    assert re.fullmatch(r"pid:\d+@\d+\.\d\d", submitted), submitted

    runner = earlier_runner(tmp_path)
    process = subprocess.Popen(["sleep", "60"])
    try:
        started = psutil.Process(process.pid).create_time()
        assert runner.state(f"pid:{process.pid}@{started:.2f}") == "running"
        # The job that had this pid started earlier: this process is not it.
        assert runner.state(f"pid:{process.pid}@{started - 5:.2f}") == "gone"
        # An id from before start times were kept cannot tell: alive is all it knows.
        assert runner.state(f"pid:{process.pid}") == "running"
    finally:
        process.kill()
        process.wait()
