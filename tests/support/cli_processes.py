"""Running the `sfmlops` command and its API server as a user does: real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.network import free_port

TOKEN = "e2e-token-not-a-secret-0123456789abcdef"
"""The API token of the servers `start` runs."""
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def environment(home: Path, **settings: str) -> dict[str, str]:
    """This environment without SFMLOPS_ variables, plus the home, the token and `settings`.

    Each setting becomes SFMLOPS_<NAME>; MLflow's and Ray's usage reporting are off, as
    tests never reach beyond this machine.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFMLOPS_")}
    return (
        env
        | {
            "SFMLOPS_HOME": str(home),
            "SFMLOPS_API_TOKEN": TOKEN,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        | {f"SFMLOPS_{name.upper()}": value for name, value in settings.items()}
    )


def start(
    home: Path, *args: str, settings: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `sfmlops serve` on a free port; returns the process and its URL once it is healthy."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("sfmlops")), "serve", "--port", str(port), *args]
    process = subprocess.Popen(
        command,
        env=environment(home, **(settings or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                process.stdout.read().decode() if process.stdout else "server exited"
            )
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError("server did not start")


def sfmlops(
    home: Path, *args: str, database_url: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `sfmlops ARGS` with HOME (and a database URL) set; returns the finished process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFMLOPS_")}
    env |= {"SFMLOPS_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    if database_url:
        env["SFMLOPS_DATABASE_URL"] = database_url
    command = [str(Path(sys.executable).with_name("sfmlops")), *args]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
