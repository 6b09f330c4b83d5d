"""MLflow's basic-auth app in the chart (mlflow.auth, on by default): the server requires
credentials and sets up its users before starting; the programs that train and register hold the
writer's credentials, the API only the reader's, and nobody else the admin's; off, nothing changes."""

from __future__ import annotations

from typing import Any

from tests.support.deploy import CHART, RELEASES, Rendered, load_yaml, pod_specs, render_values

ADMIN_SECRET = "sfmlops-mlflow-auth"
WRITER_SECRET = "sfmlops-mlflow-writer"
READER_SECRET = "sfmlops-mlflow-reader"
CREDENTIALS = {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
ADMIN = {"MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"}
AIRFLOW_NAMESPACE = RELEASES["AIRFLOW_NAMESPACE"]
TASKS = load_yaml(CHART / "values.yaml")["airflowTasks"]["configMapName"]
SERVER = "Deployment/sfmlops-mlflow/mlflow"


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


def test_by_default_the_server_sets_up_its_users_and_each_client_holds_only_its_own() -> None:
    rendered = render_values("mlflow-auth", [], ["bootstrap.enabled=true"])
    containers = _containers(rendered)

    server = containers[SERVER]
    server_env = _env(server)
    script = server["args"][0]
    assert server["command"] == ["sh", "-c"]
    assert "default_permission = NO_PERMISSIONS" in script
    assert "auth_cache_ttl_seconds = 300" in script
    # The users are set before the server starts.
    assert script.index("python /etc/sfmlops/mlflow-users.py &&") < script.index("exec mlflow")
    assert "--app-name=basic-auth" in script
    assert server_env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/tmp/basic_auth.ini"
    assert _secret_reference(server_env["MLFLOW_AUTH_ADMIN_USERNAME"]) == (
        ADMIN_SECRET,
        "admin-username",
    )
    assert _secret_reference(server_env["MLFLOW_AUTH_ADMIN_PASSWORD"]) == (
        ADMIN_SECRET,
        "admin-password",
    )
    assert _secret_reference(server_env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == (
        ADMIN_SECRET,
        "flask-secret-key",
    )
    for user, secret in (("WRITER", WRITER_SECRET), ("READER", READER_SECRET)):
        for part in ("USERNAME", "PASSWORD"):
            variable = server_env[f"SFMLOPS_MLFLOW_{user}_{part}"]
            assert _secret_reference(variable) == (secret, f"MLFLOW_TRACKING_{part}")
    # The script the server runs is the chart's file, and a change to it restarts the server.
    users = rendered.get("ConfigMap", "sfmlops-mlflow-users")
    assert users is not None
    script_text = (CHART / "files" / "mlflow-users.py").read_text()
    assert users["data"]["mlflow-users.py"].strip() == script_text.strip()
    deployment = rendered.get("Deployment", "sfmlops-mlflow")
    assert deployment is not None
    assert "checksum/users" in deployment["spec"]["template"]["metadata"]["annotations"]
    admin = rendered.get("Secret", ADMIN_SECRET)
    assert admin is not None
    assert set(admin["data"]) == {"admin-username", "admin-password", "flask-secret-key"}
    for secret in (WRITER_SECRET, READER_SECRET):
        generated = rendered.get("Secret", secret)
        assert generated is not None
        assert set(generated["data"]) == CREDENTIALS
    # Who holds which credentials: the admin's only the server; the writer's whatever trains
    # and registers; the API, which only loads, the reader's.
    holders = {
        label: {
            _secret_reference(variable)[0]
            for name, variable in _env(container).items()
            if name in CREDENTIALS | ADMIN
        }
        for label, container in containers.items()
    }
    assert {label for label, secrets in holders.items() if ADMIN_SECRET in secrets} == {SERVER}
    assert holders["Deployment/sfmlops-api/api"] == {READER_SECRET}
    assert holders["Job/sfmlops-bootstrap/bootstrap"] == {WRITER_SECRET}
    ray = [label for label in holders if label.startswith("RayCluster/")]
    assert ray
    assert all(holders[label] == {WRITER_SECRET} for label in ray)
    assert {label for label, secrets in holders.items() if secrets} == {
        SERVER,
        "Deployment/sfmlops-api/api",
        "Job/sfmlops-bootstrap/bootstrap",
        *ray,
    }
    # Airflow's task pods read the writer's Secret whole, and it holds nothing else.
    config_map = rendered.get("ConfigMap", TASKS, AIRFLOW_NAMESPACE)
    assert config_map is not None
    assert config_map["data"]["SFMLOPS_POD_SECRETS"] == WRITER_SECRET


def test_existing_secrets_replace_the_generated_ones() -> None:
    rendered = render_values(
        "mlflow-auth-existing",
        [],
        [
            "mlflow.auth.existingSecret=mine-admin",
            "mlflow.auth.writer.existingSecret=mine-writer",
            "mlflow.auth.reader.existingSecret=mine-reader",
        ],
    )
    containers = _containers(rendered)

    assert not {ADMIN_SECRET, WRITER_SECRET, READER_SECRET} & {
        item["metadata"]["name"] for item in rendered.objects if item["kind"] == "Secret"
    }
    server_env = _env(containers[SERVER])
    assert _secret_reference(server_env["MLFLOW_AUTH_ADMIN_PASSWORD"])[0] == "mine-admin"
    assert _secret_reference(server_env["SFMLOPS_MLFLOW_READER_PASSWORD"])[0] == "mine-reader"
    api_env = _env(containers["Deployment/sfmlops-api/api"])
    assert _secret_reference(api_env["MLFLOW_TRACKING_PASSWORD"]) == (
        "mine-reader",
        "MLFLOW_TRACKING_PASSWORD",
    )


def test_without_auth_the_server_is_as_before_and_no_secret_is_made() -> None:
    rendered = render_values("mlflow-no-auth", [], ["mlflow.auth.enabled=false"])
    containers = _containers(rendered)

    server = containers[SERVER]
    assert "command" not in server
    assert server["args"][0] == "server"
    for secret in (ADMIN_SECRET, WRITER_SECRET, READER_SECRET):
        assert rendered.get("Secret", secret) is None
    assert rendered.get("ConfigMap", "sfmlops-mlflow-users") is None
    assert not any(CREDENTIALS & _env(container).keys() for container in containers.values())
