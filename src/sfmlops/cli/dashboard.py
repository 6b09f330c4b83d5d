"""`sfmlops ui`: the dashboard, a Streamlit app that reads everything through the API."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from sfmlops.cli.context import console, fail, settings_of
from sfmlops.cli.serve import is_loopback
from sfmlops.settings import Settings

APP = Path(__file__).resolve().parents[1] / "ui" / "streamlit_app.py"


def run_ui(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
) -> None:
    """Run the dashboard; it talks to the API at SFMLOPS_API_URL only.

    Beyond loopback it needs SFMLOPS_UI_PASSWORD (a sign-in form); behind a sign-in proxy,
    listen on loopback and let the proxy be the way in.
    """
    settings = settings_of(ctx)
    if not is_loopback(host) and settings.ui_password is None:
        fail(
            f"refusing to listen on {host} without SFMLOPS_UI_PASSWORD: anyone reaching it could "
            "read every store's data and retrain with the API token (set a password of at least "
            "12 characters, or listen on 127.0.0.1 behind a sign-in proxy)"
        )
    path = f"/{settings.ui_base_path}" if settings.ui_base_path else ""
    console.print(f"Dashboard on http://{host}:{port}{path}/ (API: {settings.api_url})")
    command = streamlit_command(settings, host, port)
    # Replaced, not wrapped: Streamlit gets the signals a service manager or Kubernetes sends.
    os.execv(command[0], command)


def streamlit_command(settings: Settings, host: str, port: int) -> list[str]:
    """`streamlit run` on the app, served as a headless service (no reloads, no telemetry)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless=true",
        f"--server.address={host}",
        f"--server.port={port}",
        f"--server.baseUrlPath={settings.ui_base_path}",
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=viewer",
        "--global.developmentMode=false",
    ]
