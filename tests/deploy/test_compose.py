"""compose.yaml and its files, read as files: what `make compose-test` cannot show by running it.

Grafana is not started here (its image is not built locally), so its provisioning is checked
against the dashboards it would load; the rest of the stack runs in tests/compose.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
COMPOSE_SCRIPT = ROOT / "scripts" / "compose.sh"
ONE_SHOT = {"bootstrap", "producer", "database-roles"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def test_compose_scripts_pass_shellcheck() -> None:
    scripts = [COMPOSE_SCRIPT, ROOT / "scripts" / "compose-images.sh"]
    scripts += sorted((ROOT / "images" / "compose").glob("*/*.sh"))
    result = subprocess.run(
        [tool("shellcheck"), "-x", *map(str, scripts)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_long_running_services_restart_and_one_shots_retry_on_failure(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        expected = "on-failure" if name in ONE_SHOT else "unless-stopped"
        assert service.get("restart") == expected, name


def test_every_service_has_rlimits_a_host_without_cap_sys_resource_allows(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        assert service["ulimits"] == {
            "nofile": {"soft": 1024, "hard": 1024},
            "nproc": {"soft": 4096, "hard": 4096},
        }, name


def test_ports_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published
    assert all(port.startswith("127.0.0.1:") for port in published), published
    assert "127.0.0.1:${SFMLOPS_PROXY_PORT:-8088}:8080" in services["nginx"]["ports"]


def test_no_secret_has_a_default(services: dict[str, dict[str, Any]]) -> None:
    secret = re.compile(
        r"PASSWORD|TOKEN|SECRET|SIGNING_KEY|DATABASE_URL|STORE_URI|SQL_ALCHEMY_CONN"
    )
    checked = 0
    for name, service in services.items():
        for key, value in service.get("environment", {}).items():
            if not secret.search(key):
                continue
            checked += 1
            variables = re.findall(r"\$\{([A-Z_]+)(:?[-?][^}]*)?\}", str(value))
            assert variables, f"{name}.{key} is a literal"
            for variable, modifier in variables:
                assert not modifier.startswith((":-", "-")), (
                    f"{name}.{key}: ${variable} has a default"
                )
    assert checked >= 8


def test_optional_services_are_under_profiles(services: dict[str, dict[str, Any]]) -> None:
    assert services["pgadmin"]["profiles"] == ["pgadmin"]
    assert services["grafana"]["profiles"] == ["grafana"]
    assert services["airflow"]["profiles"] == ["airflow"]
    unprofiled = {name for name, service in services.items() if "profiles" not in service}
    assert {
        "postgres",
        "kafka",
        "mlflow",
        "ray-head",
        "ray-worker",
        "bootstrap",
        "api",
    } <= unprofiled
    assert {"dashboard", "stream", "producer", "nginx", "prometheus"} <= unprofiled


def test_sfmlops_images_are_the_images_of_the_build_list(
    services: dict[str, dict[str, Any]],
) -> None:
    listing = subprocess.run(
        [str(ROOT / "scripts" / "images.sh"), "list"], capture_output=True, text=True, check=True
    ).stdout
    built = {f"sfmlops-{line.split()[0]}": line.split()[2] for line in listing.splitlines()}
    for name, service in services.items():
        image = service["image"]
        if not image.startswith("sfmlops-"):
            assert image.startswith("${SFMLOPS_"), f"{name}: a third-party image must be swappable"
            continue
        repository, _, tag = image.partition(":")
        assert repository in built, name
        assert tag == "${SFMLOPS_IMAGE_TAG:-latest}", name
        target = service["build"].get("target", "-")
        assert target == built[repository], name


def test_mounted_files_exist(services: dict[str, dict[str, Any]]) -> None:
    mounted = [
        volume.split(":")[0]
        for service in services.values()
        for volume in service.get("volumes", [])
        if volume.startswith("./")
    ]
    assert "./sfmlops-helm/rules/sfmlops.rules.yaml" in mounted
    for path in mounted:
        assert (ROOT / path).exists(), path


def test_grafana_provisioning_loads_the_charts_dashboards_from_its_prometheus(
    services: dict[str, dict[str, Any]],
) -> None:
    mounts = dict(volume.split(":")[:2] for volume in services["grafana"]["volumes"])
    provisioning = ROOT / mounts_source(mounts, "/etc/grafana/provisioning")
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "sfmlops.yaml").read_text())[
        "providers"
    ]
    dashboards_path = provider["options"]["path"]
    source = mounts_source(mounts, dashboards_path)
    assert source == "./sfmlops-helm/dashboards"
    dashboards = sorted((ROOT / source).glob("*.json"))
    assert dashboards
    for dashboard in dashboards:
        variables = json.loads(dashboard.read_text())["templating"]["list"]
        (choice,) = [v for v in variables if v["type"] == "datasource"]
        # The dashboards pick a data source of this type; the default is the provisioned one.
        assert choice["query"] == datasource["type"]
        assert choice["current"]["value"] in (datasource["uid"], datasource["name"])


def test_prometheus_scrapes_the_stream_job_on_its_metrics_port(
    services: dict[str, dict[str, Any]],
) -> None:
    # The stream job exports its metrics only with the port set, and only a scrape of it
    # feeds the stream lag and dead-letter alerts Prometheus evaluates here.
    stream = services["stream"]
    assert "--continuous" in stream["command"]
    port = stream["environment"]["SFMLOPS_STREAM_METRICS_PORT"]
    mounts = dict(volume.split(":")[:2] for volume in services["prometheus"]["volumes"])
    config = ROOT / mounts_source(mounts, "/etc/prometheus/prometheus.yml")
    jobs = {job["job_name"]: job for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    (static,) = jobs["sfmlops-stream"]["static_configs"]
    assert static["targets"] == [f"stream:{port}"]
    assert jobs["sfmlops-stream"].get("metrics_path", "/metrics") == "/metrics"


def mounts_source(mounts: dict[str, str], target: str) -> str:
    (source,) = [source for source, mounted in mounts.items() if mounted == target]
    return source


def test_nginx_serves_the_dashboard_at_the_root_and_the_api_under_api() -> None:
    config = (ROOT / "compose" / "nginx.conf").read_text()
    assert "listen 8080;" in config
    # Only the versioned API and the probes: /metrics, /docs and /openapi.json stay private.
    api = config[
        config.index("location ~ ^/api/(v1/.*|health|ready)$") : config.index("location = /api ")
    ]
    assert "http://api:4242" in api
    assert "rewrite ^/api/(.*)$ /$1 break;" in api
    # The rest of /api answers 404 instead of falling through to the dashboard at /.
    assert "location /api/ {\n      return 404;\n    }" in config
    root = config[config.index("location / {") :]
    assert "http://dashboard:8000" in root
    assert "Upgrade $http_upgrade" in root


def test_the_api_knows_its_path_behind_nginx(services: dict[str, dict[str, Any]]) -> None:
    assert services["api"]["environment"]["SFMLOPS_API_ROOT_PATH"] == "/api"
    assert services["dashboard"]["environment"]["SFMLOPS_API_URL"] == "http://api:4242"


def test_compose_env_writes_random_secrets_once(tmp_path: Path) -> None:
    env_file = tmp_path / "stack.env"

    subprocess.run([str(COMPOSE_SCRIPT), "env", str(env_file)], check=True)
    first = env_file.read_text()
    subprocess.run([str(COMPOSE_SCRIPT), "env", str(env_file)], check=True)

    assert env_file.read_text() == first
    assert env_file.stat().st_mode & 0o077 == 0
    values = dict(line.split("=", 1) for line in first.splitlines() if not line.startswith("#"))
    assert set(values) == {
        "POSTGRES_PASSWORD",
        "APP_DB_PASSWORD",
        "MLFLOW_DB_PASSWORD",
        "AIRFLOW_DB_PASSWORD",
        "API_TOKEN",
        "PGADMIN_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "UI_PASSWORD",
        "MODEL_SIGNING_KEY",
        "MLFLOW_ADMIN_PASSWORD",
        "MLFLOW_WRITER_PASSWORD",
        "MLFLOW_READER_PASSWORD",
        "MLFLOW_FLASK_SECRET_KEY",
    }
    assert all(re.fullmatch(r"[0-9a-f]{32,64}", value) for value in values.values())
    assert len(set(values.values())) == len(values)


def test_compose_env_adds_a_missing_secret_and_keeps_the_others(tmp_path: Path) -> None:
    env_file = tmp_path / "older.env"
    env_file.write_text("POSTGRES_PASSWORD=kept\nAPI_TOKEN=kept-too\n")

    subprocess.run([str(COMPOSE_SCRIPT), "env", str(env_file)], check=True)

    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert values["POSTGRES_PASSWORD"] == "kept"
    assert values["API_TOKEN"] == "kept-too"
    assert re.fullmatch(r"[0-9a-f]{64}", values["MODEL_SIGNING_KEY"])


def test_the_signing_key_reaches_the_model_loaders_only(
    services: dict[str, dict[str, Any]],
) -> None:
    # Training (Ray) signs bundles; the API and the bootstrap's forecasts verify them.
    holders = {
        name
        for name, service in services.items()
        if "SFMLOPS_MODEL_SIGNING_KEY" in service.get("environment", {})
    }
    assert holders == {"ray-head", "ray-worker", "bootstrap", "api"}
    for name in holders:
        value = services[name]["environment"]["SFMLOPS_MODEL_SIGNING_KEY"]
        assert value.startswith("${MODEL_SIGNING_KEY:?"), name


def test_mlflow_runs_the_charts_users_script_and_each_client_holds_only_its_user(
    services: dict[str, dict[str, Any]],
) -> None:
    mlflow = services["mlflow"]
    start = mlflow["entrypoint"][-1]
    assert (
        "./sfmlops-helm/files/mlflow-users.py:/etc/sfmlops/mlflow-users.py:ro"
        in (mlflow["volumes"])
    )
    assert "default_permission = NO_PERMISSIONS" in start
    assert "auth_cache_ttl_seconds = 300" in start
    assert start.index("python /etc/sfmlops/mlflow-users.py &&") < start.index("exec mlflow")
    assert "--app-name=basic-auth" in start
    # The admin's password reaches MLflow only; the writer's what trains, the reader's the API.
    holders: dict[str, set[str]] = {}
    for name, service in services.items():
        for variable in re.findall(
            r"\$\{(MLFLOW_[A-Z]+_PASSWORD)", str(service.get("environment"))
        ):
            holders.setdefault(variable, set()).add(name)
    assert holders == {
        "MLFLOW_ADMIN_PASSWORD": {"mlflow"},
        "MLFLOW_WRITER_PASSWORD": {"mlflow", "ray-head", "ray-worker", "bootstrap"},
        "MLFLOW_READER_PASSWORD": {"mlflow", "api"},
        "MLFLOW_DB_PASSWORD": {"mlflow", "database-roles"},
    }
    for name in ("ray-head", "ray-worker", "bootstrap"):
        assert services[name]["environment"]["MLFLOW_TRACKING_USERNAME"] == "sfmlops-writer"
    assert services["api"]["environment"]["MLFLOW_TRACKING_USERNAME"] == "sfmlops-reader"


def test_podman_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    podman_compose = subprocess.run(
        [str(COMPOSE_SCRIPT), "tools"], capture_output=True, text=True, check=True
    ).stdout.strip()
    empty = tmp_path / "empty.env"
    empty.write_text("")
    generated = tmp_path / "stack.env"
    subprocess.run([str(COMPOSE_SCRIPT), "env", str(generated)], check=True)

    def config(env_file: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [podman_compose, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
        )

    refused = config(empty)
    accepted = config(generated)

    assert refused.returncode != 0
    assert "run make compose-env to create .env" in refused.stdout + refused.stderr
    assert accepted.returncode == 0, accepted.stderr
    passwords = dict(
        line.split("=", 1) for line in generated.read_text().splitlines() if "=" in line
    )
    # Each database's own role, never the superuser, in the programs' URLs.
    assert f"sfmlops_app:{passwords['APP_DB_PASSWORD']}@postgres:5432/sfmlops" in accepted.stdout
    assert f"mlflow:{passwords['MLFLOW_DB_PASSWORD']}@postgres:5432/mlflow" in accepted.stdout
    assert f"sfmlops:{passwords['POSTGRES_PASSWORD']}@" not in accepted.stdout


def test_compose_runs_the_charts_database_roles_script(
    services: dict[str, dict[str, Any]],
) -> None:
    roles = services["database-roles"]
    assert roles["entrypoint"] == ["bash", "/usr/local/bin/database-roles.sh"]
    assert roles["volumes"] == [
        "./sfmlops-helm/files/database-roles.sh:/usr/local/bin/database-roles.sh:ro"
    ]
    environment = roles["environment"]
    assert environment["PGUSER"] == "sfmlops"
    entries = [entry.split(":") for entry in environment["DATABASE_ROLES"].split()]
    assert [(role, database) for role, database, _ in entries] == [
        ("sfmlops_app", "sfmlops"),
        ("mlflow", "mlflow"),
        ("airflow", "airflow"),
    ]
    for role, _, variable in entries:
        assert environment[f"ROLE_PASSWORD_{role.upper()}"].startswith(f"${{{variable}:?")
    # Every other program logs in as a database's own role: the superuser's password reaches
    # only the server and this service.
    holders = {
        name
        for name, service in services.items()
        if "POSTGRES_PASSWORD" in str(service.get("environment", {}))
    }
    assert holders == {"postgres", "database-roles"}


def test_no_service_depends_on_a_one_shot_service(services: dict[str, dict[str, Any]]) -> None:
    # podman 4 cannot start a container whose `--requires` include an exited one: the services
    # that need the bootstrap's work wait for it themselves.
    for name, service in services.items():
        assert not ONE_SHOT & set(service.get("depends_on", {})), name


def test_third_party_stand_ins_exist_for_the_services_the_local_stack_runs(
    services: dict[str, dict[str, Any]],
) -> None:
    script = (ROOT / "scripts" / "compose.sh").read_text()
    for name in ("postgres", "kafka", "nginx", "prometheus"):
        assert (ROOT / "images" / "compose" / name / "Containerfile").is_file()
        assert services[name]["image"].startswith(f"${{SFMLOPS_{name.upper()}_IMAGE:-")
    assert "for name in postgres kafka nginx prometheus; do" in script
