"""The Compose stack (compose.yaml) brought up for real, checked through nginx on 127.0.0.1.

Run by `make compose-test` (part of `make test`): it builds the missing images, starts the
stack under a project name of its own with a bootstrap that trains a few stores, and takes it
down with its volumes at the end. The tests run in file order on one stack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sfmlops.datasets import ROSSMANN_DIR
from tests.support.deploy import run
from tests.support.mlflow_auth import READER_ANSWERS, READER_PROBE, reader_answers
from tests.support.network import free_port

# The first test also waits for the images, the stack's start and the bootstrap's training.
pytestmark = [pytest.mark.containers, pytest.mark.compose, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "scripts" / "compose.sh"
TRAIN_STORES = 3
UP_TIMEOUT = 900.0
# The Compose project names of these tests: what an interrupted run left is found by it.
PROJECT_PREFIX = "sfmlops-test-"


@dataclass
class Stack:
    project: str
    engine: str
    env: dict[str, str]
    proxy: str
    prometheus: str
    token: str

    def compose(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run a Compose command on this stack; fail the test with its output if it fails."""
        return run([str(COMPOSE), *args], env=self.env, timeout=timeout, explain=self.diagnostics)

    def containers(self, service: str | None = None, every: bool = True) -> list[str]:
        """Ids of this project's containers (of one service), running or not."""
        filters = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        listed = self.engine_output("ps", *(["-a"] if every else []), "-q", *filters)
        return listed.split()

    def engine_output(self, *args: str) -> str:
        return subprocess.run(
            [self.engine, *args], env=self.env, capture_output=True, text=True, check=True
        ).stdout

    def inspect(self, container: str, template: str) -> str:
        return self.engine_output("inspect", "--format", template, container).strip()

    def sql(self, query: str) -> str:
        """One value from the sfmlops database, through psql in the postgres container."""
        (postgres,) = self.containers("postgres", every=False)
        return self.engine_output(
            "exec", postgres, "psql", "-U", "sfmlops", "-d", "sfmlops", "-tAc", query
        ).strip()

    def diagnostics(self, tail: int = 3000) -> str:
        """Each container's state and the end of its log: what a failure message needs."""
        sections = []
        for container in self.containers():
            state = self.inspect(
                container,
                '{{index .Config.Labels "com.docker.compose.service"}}: {{.State.Status}}, '
                "exit code {{.State.ExitCode}}, {{.RestartCount}} restarts",
            )
            log = subprocess.run(
                [self.engine, "logs", container],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            ).stdout
            sections.append(f"--- {state} ---\n{log[-tail:]}")
        return "\n".join(sections)

    def logs(self, service: str) -> str:
        """The output of a service's containers, stdout and stderr."""
        return "\n".join(
            subprocess.run(
                [self.engine, "logs", container],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            ).stdout
            for container in self.containers(service)
        )


def _http(
    url: str, token: str | None = None, body: dict[str, Any] | None = None
) -> tuple[int, str]:
    request = urllib.request.Request(url, method="POST" if body is not None else "GET")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    data = None
    if body is not None:
        request.add_header("Content-Type", "application/json")
        data = json.dumps(body).encode()
    try:
        with urllib.request.urlopen(request, data=data, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


def _until(what: str, check: Any, timeout: float, stack: Stack | None = None) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` (with logs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    detail = stack.diagnostics() if stack is not None else ""
    pytest.fail(f"{what}: not within {timeout:.0f} s\n{detail}")


def _remove_leftover_stacks(engine: str, env: dict[str, str]) -> None:
    """Remove what an interrupted run of these tests left (containers, pods, volumes, networks).

    Only this file's projects (`sfmlops-test-*`) are touched: a user's own stack stays.
    """

    def leftovers(*listing: str) -> list[str]:
        output = subprocess.run(
            [engine, *listing, "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = []
        # podman spells the keys of networks in lower case, of the rest capitalised.
        for item in json.loads(output or "[]"):
            labels = item.get("Labels") or item.get("labels") or {}
            if labels.get("com.docker.compose.project", "").startswith(PROJECT_PREFIX):
                found.append(item.get("Name") or item.get("name") or item.get("Id"))
        return found

    for listing, removal in (
        (("ps", "-a"), ("rm", "-f", "-t", "0")),
        (("pod", "ls"), ("pod", "rm", "-f")),
        (("volume", "ls"), ("volume", "rm", "-f")),
        (("network", "ls"), ("network", "rm", "-f")),
    ):
        if listing == ("pod", "ls") and engine != "podman":
            continue
        for name in leftovers(*listing):
            print(f"removing {name}, left by an earlier run of these tests")
            subprocess.run([engine, *removal, name], env=env, check=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("compose")
    env_file = folder / "compose.env"
    project = f"{PROJECT_PREFIX}{uuid.uuid4().hex[:8]}"
    proxy_port, prometheus_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFMLOPS_")}
    env |= {
        "SFMLOPS_COMPOSE_ENV_FILE": str(env_file),
        "COMPOSE_PROJECT_NAME": project,
        "SFMLOPS_PROXY_PORT": str(proxy_port),
        "SFMLOPS_PROMETHEUS_PORT": str(prometheus_port),
        "SFMLOPS_PGADMIN_PORT": str(free_port()),
        "SFMLOPS_BOOTSTRAP_TRAIN_STORES": str(TRAIN_STORES),
        "SFMLOPS_BOOTSTRAP_ARGS": "--windows 1",
        # One gunicorn worker: each worker's start costs CPU at every (re)start of the API.
        "SFMLOPS_API_WORKERS": "1",
        # The live feed sends every store's next day at once (the default is one every 10 s).
        "SFMLOPS_PRODUCER_RATE": "500",
        "SFMLOPS_COMPOSE_UP_TIMEOUT": str(int(UP_TIMEOUT)),
    }
    subprocess.run([str(COMPOSE), "env", str(env_file)], env=env, check=True)
    secrets = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    engine = subprocess.run(
        [str(ROOT / "scripts" / "images.sh"), "engine"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    images = subprocess.run(
        [str(COMPOSE), "images"], env=env, capture_output=True, text=True, check=False, cwd=ROOT
    )
    if images.returncode != 0:
        pytest.fail(f"building the images failed:\n{images.stderr[-5000:]}")
    for line in images.stdout.splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    _remove_leftover_stacks(engine, env)
    stack = Stack(
        project=project,
        engine=engine,
        env=env,
        proxy=f"http://127.0.0.1:{proxy_port}",
        prometheus=f"http://127.0.0.1:{prometheus_port}",
        token=secrets["API_TOKEN"],
    )
    try:
        up = stack.compose("up", "--no-build", timeout=UP_TIMEOUT + 900)
        # The time from `up` to the first forecast (docs/benchmarks.md), in the test's output.
        reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        for line in up.stdout.splitlines():
            if "first forecast was served" in line and reporter is not None:
                reporter.write_line(f"\ncompose: {line}")
        yield stack
    finally:
        subprocess.run(
            [str(COMPOSE), "down", "-v"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            timeout=300,
            check=False,
        )
        _remove_leftover_stacks(engine, env)


def _forecast(stack: Stack) -> dict[str, Any] | None:
    status, body = _http(f"{stack.proxy}/api/v1/stores/1/forecast", token=stack.token)
    return json.loads(body) if status == 200 else None


def test_a_fresh_up_ends_with_the_dashboard_and_forecasts_served_through_nginx(
    stack: Stack,
) -> None:
    forecast = _until(
        "a forecast of store 1 through nginx", lambda: _forecast(stack), UP_TIMEOUT, stack
    )

    assert forecast["store_id"] == 1
    assert len(forecast["forecast"]) == forecast["days"] > 0
    status, page = _http(f"{stack.proxy}/")
    assert status == 200
    assert "<title>" in page
    assert "streamlit" in page.lower()
    assert _http(f"{stack.proxy}/_stcore/health") == (200, "ok")
    # Reads need the token; /metrics and the docs are not published through nginx.
    assert _http(f"{stack.proxy}/api/v1/stores/1/forecast")[0] == 401
    assert _http(f"{stack.proxy}/api/health")[0] == 200
    for internal in ("/api/metrics", "/api/docs", "/api/openapi.json"):
        assert _http(f"{stack.proxy}{internal}", token=stack.token)[0] == 404, internal
    bootstrap_log = stack.logs("bootstrap")
    assert f"training the first {TRAIN_STORES} stores" in bootstrap_log
    assert "Bootstrap done" in bootstrap_log


def test_each_database_is_used_by_its_own_role_only(stack: Stack) -> None:
    # The API, the stream job and the rest hold sales connections by now; MLflow its own.
    users = stack.sql(
        "SELECT string_agg(DISTINCT datname || ':' || usename, ',' ORDER BY datname || ':' ||"
        " usename) FROM pg_stat_activity WHERE datname IS NOT NULL AND pid <> pg_backend_pid()"
    )
    assert set(users.split(",")) <= {"sfmlops:sfmlops_app", "mlflow:mlflow", "airflow:airflow"}
    assert "sfmlops:sfmlops_app" in users.split(",")
    owners = stack.sql(
        "SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
    )
    assert owners == "sfmlops_app"
    assert stack.sql("SELECT rolsuper FROM pg_roles WHERE rolname = 'sfmlops_app'") == "f"
    # Nor may a role reach a database not its own, the maintenance database included.
    open_to_all = stack.sql(
        "SELECT string_agg(datname, ',') FROM pg_database WHERE datallowconn"
        " AND has_database_privilege('public', oid, 'CONNECT')"
    )
    assert open_to_all == ""


def test_mlflow_requires_credentials_and_the_api_may_only_read(stack: Stack) -> None:
    # The bootstrap (the writer) registered the champion the API (the reader) serves by now.
    (api,) = stack.containers("api", every=False)
    answers = reader_answers(stack.engine_output("exec", api, "python", "-c", READER_PROBE))
    assert answers == READER_ANSWERS


def test_a_store_retrain_through_the_api_runs_on_ray_and_becomes_the_served_champion(
    stack: Stack,
) -> None:
    before = _forecast(stack)
    assert before is not None
    status, body = _http(
        f"{stack.proxy}/api/v1/training-jobs", token=stack.token, body={"stores": [1]}
    )
    assert status == 202, body
    job = json.loads(body)
    assert job["runner"] == "ray-jobs"

    def finished() -> dict[str, Any] | None:
        code, text = _http(f"{stack.proxy}/api/v1/training-jobs/{job['id']}", token=stack.token)
        current = json.loads(text) if code == 200 else {}
        return current if current.get("status") in ("succeeded", "failed") else None

    done = _until("the training job", finished, 600, stack)
    assert done["status"] == "succeeded", done
    assert done["stores"] == [1]
    new_version = done["model_version"]
    assert new_version
    assert new_version != before["model_version"]
    served = _until(
        f"version {new_version} served",
        lambda: (_forecast(stack) or {}).get("model_version") == new_version,
        120,
        stack,
    )
    assert served
    (head,) = stack.containers("ray-head", every=False)
    jobs = stack.engine_output("exec", head, "ray", "job", "list")
    assert f"sfmlops-{job['id']}" in jobs


def test_producer_events_land_in_postgresql_through_kafka_and_spark(stack: Stack) -> None:
    stores = int(stack.sql("SELECT count(*) FROM stores"))
    assert stores >= 1000
    bundled_last_day = pd.read_csv(ROSSMANN_DIR / "train.csv.gz", usecols=["Date"])["Date"].max()

    def landed() -> bool:
        live = stack.sql(f"SELECT count(*) FROM sales WHERE sales_date > '{bundled_last_day}'")
        return int(live) == stores

    # The producer's live feed: every store's day after the bundled data, one event each.
    assert _until(f"{stores} live events in PostgreSQL", landed, 600, stack)
    assert (
        stack.sql(
            f"SELECT count(DISTINCT sales_date) FROM sales WHERE sales_date > '{bundled_last_day}'"
        )
        == "1"
    )
    assert stack.sql("SELECT count(*) FROM ingest_dead_letters") == "0"


def test_prometheus_scrapes_the_api_and_the_stream_job_and_loads_the_alert_rules(
    stack: Stack,
) -> None:
    def target_up(job: str) -> bool:
        status, body = _http(f"{stack.prometheus}/api/v1/targets")
        if status != 200:
            return False
        targets = json.loads(body)["data"]["activeTargets"]
        return any(t["labels"]["job"] == job and t["health"] == "up" for t in targets)

    assert _until("Prometheus scraping the API", lambda: target_up("sfmlops-api"), 180, stack)
    status, body = _http(f"{stack.prometheus}/api/v1/query?query=up%7Bjob%3D%22sfmlops-api%22%7D")
    assert status == 200
    assert json.loads(body)["data"]["result"][0]["value"][1] == "1"
    # The stream job's own series (the stream alerts' inputs), from its metrics port.
    assert _until(
        "Prometheus scraping the stream job", lambda: target_up("sfmlops-stream"), 180, stack
    )
    status, body = _http(
        f"{stack.prometheus}/api/v1/query?query=sfmlops_stream_records_total%7Bjob%3D%22sfmlops-stream%22%7D"
    )
    assert status == 200
    assert json.loads(body)["data"]["result"], "no sfmlops_stream_records_total from the stream job"
    status, body = _http(f"{stack.prometheus}/api/v1/rules")
    assert status == 200
    rules = [
        rule["name"] for group in json.loads(body)["data"]["groups"] for rule in group["rules"]
    ]
    assert "SfmlopsNoNewActuals" in rules


def _crash(stack: Stack, service: str) -> tuple[str, int]:
    """SIGKILL a service's main process from the host, as a crash would; its restart count."""
    (container,) = stack.containers(service, every=False)
    restarts = int(stack.inspect(container, "{{.RestartCount}}"))
    os.kill(int(stack.inspect(container, "{{.State.Pid}}")), signal.SIGKILL)
    return container, restarts


def test_killed_api_and_stream_job_restart_and_no_event_is_lost_or_duplicated(
    stack: Stack,
) -> None:
    stores = int(stack.sql("SELECT count(*) FROM stores"))
    last_day = stack.sql("SELECT max(sales_date) FROM sales")
    rows_before = int(stack.sql("SELECT count(*) FROM sales"))
    api, api_restarts = _crash(stack, "api")
    stream, stream_restarts = _crash(stack, "stream")
    # The next live day, sent while the stream job is down: it must land once it is back.
    stack.compose(
        "run",
        "--rm",
        "--no-deps",
        "--entrypoint",
        "sfmlops",
        "producer",
        "produce",
        "--from-db",
        "--live",
        "--max-rate",
    )

    for container, restarts in ((api, api_restarts), (stream, stream_restarts)):
        _until(
            f"container {container} restarted",
            lambda c=container, r=restarts: (
                int(stack.inspect(c, "{{.RestartCount}}")) > r
                and stack.inspect(c, "{{.State.Running}}") == "true"
            ),
            180,
            stack,
        )
    assert _until("the API back through nginx", lambda: _forecast(stack), 300, stack)

    def next_day_landed() -> bool:
        return int(stack.sql("SELECT count(*) FROM sales")) == rows_before + stores

    assert _until("the events sent while the stream job was down", next_day_landed, 600, stack)
    assert stack.sql(f"SELECT count(*) FROM sales WHERE sales_date > '{last_day}'") == str(stores)
    assert (
        stack.sql(
            "SELECT count(*) FROM (SELECT store_id, product_id, sales_date FROM sales "
            "GROUP BY 1, 2, 3 HAVING count(*) > 1) duplicates"
        )
        == "0"
    )
    assert stack.sql("SELECT count(*) FROM ingest_dead_letters") == "0"


def test_down_then_up_keeps_the_data_and_skips_the_bootstrap(stack: Stack) -> None:
    rows = int(stack.sql("SELECT count(*) FROM sales"))
    served = _forecast(stack)
    assert served is not None

    stack.compose("down")
    assert stack.containers() == []
    stack.compose("up", "--no-build", timeout=UP_TIMEOUT + 900)

    again = _until("a forecast after down and up", lambda: _forecast(stack), UP_TIMEOUT, stack)
    assert again["model_version"] == served["model_version"]
    _until(
        "the bootstrap's verdict",
        lambda: "Nothing to do" in stack.logs("bootstrap"),
        UP_TIMEOUT,
        stack,
    )
    # Every row is still there (the producer's live feed may have added the next day since).
    assert int(stack.sql("SELECT count(*) FROM sales")) >= rows


def test_down_with_volumes_leaves_no_container_network_or_volume(stack: Stack) -> None:
    stack.compose("down", "-v")

    assert stack.containers() == []
    assert stack.project not in stack.engine_output("network", "ls", "--format", "{{.Name}}")
    assert stack.project not in stack.engine_output("volume", "ls", "--format", "{{.Name}}")
