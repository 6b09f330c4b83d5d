"""MLflow's basic-auth app in the chart (mlflow.auth): the server requires credentials and every
program that registers or loads models holds them; off, nothing changes."""

from __future__ import annotations

from typing import Any

from tests.support.deploy import CHART, RELEASES, Rendered, load_yaml, pod_specs, render_values

SECRET = "sfmlops-mlflow-auth"
CREDENTIALS = {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
AIRFLOW_NAMESPACE = RELEASES["AIRFLOW_NAMESPACE"]
TASKS = load_yaml(CHART / "values.yaml")["airflowTasks"]["configMapName"]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in container.get("env", [])}


def _containers(rendered: Rendered) -> dict[str, dict[str, Any]]:
    """Every container by `kind/name[/group]/container`."""
    return {
        f"{label}/{container['name']}": container
        for item in rendered.objects
        for label, pod in pod_specs(item)
        for container in pod["containers"]
    }


def _secret_reference(variable: dict[str, Any]) -> tuple[str, str]:
    reference = variable["valueFrom"]["secretKeyRef"]
    return reference["name"], reference["key"]


def test_with_auth_the_server_requires_credentials_and_the_model_clients_hold_them() -> None:
    rendered = render_values(
        "mlflow-auth", [], ["mlflow.auth.enabled=true", "bootstrap.enabled=true"]
    )
    containers = _containers(rendered)

    server = containers["Deployment/sfmlops-mlflow/mlflow"]
    server_env = _env(server)
    assert server["command"] == ["sh", "-c"]
    assert "--app-name=basic-auth" in server["args"][0]
    assert "default_permission = NO_PERMISSIONS" in server["args"][0]
    assert server_env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/tmp/basic_auth.ini"
    assert _secret_reference(server_env["MLFLOW_AUTH_ADMIN_USERNAME"]) == (
        SECRET,
        "MLFLOW_TRACKING_USERNAME",
    )
    assert _secret_reference(server_env["MLFLOW_AUTH_ADMIN_PASSWORD"]) == (
        SECRET,
        "MLFLOW_TRACKING_PASSWORD",
    )
    assert _secret_reference(server_env["MLFLOW_FLASK_SERVER_SECRET_KEY"])[0] == SECRET
    secret = rendered.get("Secret", SECRET)
    assert secret is not None
    assert set(secret["data"]) == CREDENTIALS | {"MLFLOW_FLASK_SERVER_SECRET_KEY"}
    # Every holder of the model signing key (they register or load models) gets credentials.
    clients = {
        label: _env(container)
        for label, container in containers.items()
        if "SFMLOPS_MODEL_SIGNING_KEY" in _env(container)
    }
    assert {"Deployment/sfmlops-api/api", "Job/sfmlops-bootstrap/bootstrap"} <= clients.keys()
    assert any(label.startswith("RayCluster/") for label in clients)
    for label, env in clients.items():
        for variable in CREDENTIALS:
            assert _secret_reference(env[variable]) == (SECRET, variable), label
    # Airflow's task pods read the Secret whole.
    config_map = rendered.get("ConfigMap", TASKS, AIRFLOW_NAMESPACE)
    assert config_map is not None
    assert config_map["data"]["SFMLOPS_POD_SECRETS"] == SECRET


def test_without_auth_the_server_is_as_before_and_no_secret_is_made() -> None:
    rendered = render_values("mlflow-no-auth", [], [])
    containers = _containers(rendered)

    server = containers["Deployment/sfmlops-mlflow/mlflow"]
    assert "command" not in server
    assert server["args"][0] == "server"
    assert rendered.get("Secret", SECRET) is None
    assert not any(CREDENTIALS & _env(container).keys() for container in containers.values())
