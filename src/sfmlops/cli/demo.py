"""`sfmlops demo`: the product on one machine, from a fresh clone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import typer

from sfmlops.cli import pipeline, streaming_demo
from sfmlops.cli.context import console, engine_of, fail, migrate_or_fail, settings_of
from sfmlops.cli.data import load_into, print_summary
from sfmlops.datasets import ROSSMANN_DIR

START_TIMEOUT_SECONDS = 300


def run_demo(
    ctx: typer.Context,
    path: Path = typer.Option(
        ROSSMANN_DIR,
        "--path",
        help="Data folder to load instead of the bundled Rossmann data.",
        file_okay=False,
    ),
    with_kafka: bool = typer.Option(
        False,
        "--with-kafka",
        help="Then stream the last days through a Kafka broker and Spark into PostgreSQL "
        "(starts a broker and a throwaway PostgreSQL unless configured; needs Java and Maven).",
    ),
    windows: int = typer.Option(3, "--windows", min=1, help="Backtest windows of the training."),
    serve: bool = typer.Option(
        True, "--serve/--no-serve", help="End by running the API and the dashboard."
    ),
    api_port: int = typer.Option(4242, "--api-port", min=1, max=65535),
    ui_port: int = typer.Option(8000, "--ui-port", min=1, max=65535),
) -> None:
    """Load the data, train and register every store's model, forecast, then serve it all."""
    engine = engine_of(ctx)
    console.rule("sfmlops demo: data")
    migrate_or_fail(engine)
    load_into(engine, path)
    print_summary(engine)
    if with_kafka:
        streaming_demo.stream_last_days(settings_of(ctx), path)
    console.rule("sfmlops demo: weekly pipeline (train every store, register, forecast)")
    pipeline.weekly(ctx, windows=windows)
    if serve:
        console.rule("sfmlops demo: services")
        api = f"http://127.0.0.1:{api_port}"
        ui_path = f"/{settings_of(ctx).ui_base_path}".rstrip("/")
        _serve(
            [
                ("forecast API", ["serve", "--port", str(api_port)], api, "/health", {}),
                (
                    "dashboard",
                    ["ui", "--port", str(ui_port)],
                    f"http://127.0.0.1:{ui_port}{ui_path}",
                    "/_stcore/health",
                    {"SFMLOPS_API_URL": api},  # the API this demo started, whatever its port
                ),
            ]
        )


Service = tuple[str, list[str], str, str, dict[str, str]]
"""name, `sfmlops` arguments, URL, health path under the URL, extra environment."""


def _serve(services: list[Service]) -> None:
    """Run the API and the dashboard until Ctrl-C (or SIGTERM); stop both when either exits."""
    children: list[tuple[str, subprocess.Popen[bytes], str]] = []
    # Both signals mean "stop the demo", also when it was started with SIGINT ignored (as
    # background jobs of non-interactive shells are).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for name, arguments, url, health, environment in services:
            child = subprocess.Popen(
                [sys.executable, "-m", "sfmlops", *arguments],
                stdin=subprocess.DEVNULL,
                env=os.environ | environment,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops them in order
            )
            children.append((name, child, url))
            _wait_until_up(name, child, url + health)
        console.print()
        for name, _, url in children:
            console.print(f"[bold green]{name}[/] {url}")
        console.print(f"[bold green]API docs[/] {children[0][2]}/docs")
        console.print("Press Ctrl-C to stop.")
        while all(child.poll() is None for _, child, _ in children):
            time.sleep(1)
        ended = next(name for name, child, _ in children if child.poll() is not None)
        fail(f"the {ended} stopped; see its output above")
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        for _, child, _ in reversed(children):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for _, child, _ in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_until_up(name: str, child: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    with console.status(f"Starting the {name} on {url} ..."):
        while time.monotonic() < deadline:
            if child.poll() is not None:
                fail(f"the {name} exited with code {child.returncode}; see its output above")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
    fail(f"the {name} did not answer on {url} within {START_TIMEOUT_SECONDS} s")
