"""Dashboard retrain benchmark: from the click on "Retrain this store" to the new version shown.

Not part of `make test`. Run from the repository root (Playwright and Debian's Chromium):

    python benchmarks/dashboard_retrain.py [--runs 3] [--api-workers 1]
        [--output benchmarks/results/dashboard_retrain.json]

A fresh home gets the bundled data (`sfmlops load-data`) and a champion of stores 1-5
(`sfmlops train --stores 1,2,3,4,5`, default models). `sfmlops serve` (default settings: the
30 s champion poll) and `sfmlops ui` run as a user starts them; a headless Chromium opens store
3 and clicks "Retrain this store" `--runs` times, one retrain after the other. Per run: seconds
from the click to the progress shown, to the job's recorded end (`finished_at`, the API's
clock, the same machine), and to the page saying the new version is live.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

# The benchmarks' shared helpers.
from api_latency import free_port
from forecast_backtest import log, machine, save
from training_job_costs import run

SFMLOPS = str(Path(sys.executable).with_name("sfmlops"))
CHROMIUM = "/usr/bin/chromium"
STORE = 3
CHAMPION_STORES = "1,2,3,4,5"
START_SECONDS = 180
RETRAIN_SECONDS = 300
LIVE = re.compile(rf"Store {STORE} retrained: model version (\d+) is live")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="retrains, one after the other (<= 6)")
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/dashboard_retrain.json")
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sfmlops-bench-"))
    token = secrets.token_hex(24)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SFMLOPS_")}
    env |= {
        "SFMLOPS_HOME": str(home),
        "SFMLOPS_API_TOKEN": token,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    results: dict[str, Any] = {"machine": machine(), "api_workers": args.api_workers}
    servers: list[subprocess.Popen[bytes]] = []
    try:
        run(["load-data"], env)
        run(["train", "--stores", CHAMPION_STORES], env)
        api_port, ui_port = free_port(), free_port()
        api = f"http://127.0.0.1:{api_port}"
        servers.append(
            start(
                ["serve", "--port", str(api_port), "--workers", str(args.api_workers)],
                env,
                f"{api}/health",
                home / "api.log",
            )
        )
        ui = f"http://127.0.0.1:{ui_port}"
        servers.append(
            start(
                ["ui", "--port", str(ui_port)],
                env | {"SFMLOPS_API_URL": api},
                f"{ui}/_stcore/health",
                home / "ui.log",
            )
        )
        results["runs"] = retrains(ui, api, token, args.runs)
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)
    save(results, args.output)
    print(json.dumps(results, indent=2, default=str))


def retrains(ui: str, api: str, token: str, runs: int) -> list[dict[str, Any]]:
    """Click Retrain `runs` times on store 3's page; the seconds each step took."""
    measured = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
        page.set_default_timeout(START_SECONDS * 1000)
        page.goto(f"{ui}/?store={STORE}")
        page.get_by_test_id("stVegaLiteChart").locator("svg").first.wait_for()
        for number in range(runs):
            before = shown_version(page)
            button = page.get_by_role("button", name="Retrain this store")
            button.wait_for()
            while button.is_disabled():
                time.sleep(0.2)
            clicked = time.time()
            button.click()
            page.get_by_test_id("stProgress").first.wait_for()
            progress = time.time() - clicked
            live = wait_for_live(page, before)
            job = api_get(api, token, "/v1/training-jobs?limit=1")["jobs"][0]
            finished = dt.datetime.fromisoformat(job["finished_at"]).timestamp()
            measured.append(
                {
                    "run": number + 1,
                    "version": live[0],
                    "click_to_progress_shown_s": round(progress, 1),
                    "click_to_job_finished_s": round(finished - clicked, 1),
                    "click_to_new_version_shown_s": round(live[1] - clicked, 1),
                }
            )
            log(f"run {number + 1}: {measured[-1]}")
        browser.close()
    return measured


def shown_version(page: Page) -> int:
    metric = page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text("Model version", exact=True)
    )
    return int(metric.get_by_test_id("stMetricValue").inner_text().strip())


def wait_for_live(page: Page, before: int) -> tuple[int, float]:
    """The version the page says is live once it is newer than `before`, and when."""
    deadline = time.monotonic() + RETRAIN_SECONDS
    while time.monotonic() < deadline:
        for text in page.get_by_text(LIVE).all_inner_texts():
            found = LIVE.search(text)
            if found and int(found.group(1)) > before:
                return int(found.group(1)), time.time()
        time.sleep(0.1)
    raise RuntimeError(f"no new version shown within {RETRAIN_SECONDS} s")


def api_get(api: str, token: str, path: str) -> Any:
    request = urllib.request.Request(f"{api}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def start(arguments: list[str], env: dict[str, str], health: str, output: Path) -> Any:
    log(f"sfmlops {' '.join(arguments)}")
    with output.open("wb") as log_file:
        process = subprocess.Popen(
            [SFMLOPS, *arguments], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sfmlops {arguments[0]} exited:\n{output.read_text()}")
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"sfmlops {arguments[0]} did not start:\n{output.read_text()}")


if __name__ == "__main__":
    main()
