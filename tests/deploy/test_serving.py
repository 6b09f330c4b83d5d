"""The API and dashboard Deployments: the commands they run, their settings, their probes, and
the Ingress paths they are served under."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.conftest import ENDPOINTS, NAMESPACE, Rendered, helm_template, pod_specs

STREAMLIT_HEALTH = "/_stcore/health"


def _pod(rendered: Rendered, name: str) -> dict[str, Any]:
    deployment = rendered.get("Deployment", name)
    assert deployment is not None, name
    return next(pod_specs(deployment))[1]


def _option(args: list[str], option: str) -> str:
    return args[args.index(option) + 1]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _ingress_paths(rendered: Rendered) -> dict[str, str]:
    """Ingress path -> backend Service name."""
    return {
        path["path"]: path["backend"]["service"]["name"]
        for ingress in rendered.of_kind("Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }


def _service_port(rendered: Rendered, name: str) -> dict[str, Any]:
    service = rendered.get("Service", name)
    assert service is not None
    port: dict[str, Any] = service["spec"]["ports"][0]
    return port


def test_the_dashboard_runs_sfmlops_ui_with_the_api_address_and_token(rendered: Rendered) -> None:
    pod = _pod(rendered, "sfmlops-dashboard")
    container = pod["containers"][0]
    args = container["args"]
    assert args[0] == "ui"
    port = int(_option(args, "--port"))
    assert port == 8000
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    assert _service_port(rendered, "sfmlops-dashboard")["targetPort"] == "http"
    # SFMLOPS_API_URL from the endpoint ConfigMap: the API's Service, where it has no prefix.
    assert {"configMapRef": {"name": ENDPOINTS}} in container["envFrom"]
    api_url = urlsplit(rendered.get("ConfigMap", ENDPOINTS)["data"]["SFMLOPS_API_URL"])  # type: ignore[index]
    assert api_url.hostname == f"sfmlops-api.{NAMESPACE}.svc"
    assert api_url.port == _service_port(rendered, "sfmlops-api")["port"]
    assert api_url.path == ""
    # The same token Secret as the API's.
    env = _env(container)
    api_env = _env(_pod(rendered, "sfmlops-api")["containers"][0])
    assert env["SFMLOPS_API_TOKEN"]["valueFrom"] == api_env["SFMLOPS_API_TOKEN"]["valueFrom"]
    assert "SFMLOPS_DB_PASSWORD" not in env
    assert "SFMLOPS_DATABASE_URL" not in env


def test_the_dashboard_probes_streamlit_under_its_base_path(rendered: Rendered) -> None:
    container = _pod(rendered, "sfmlops-dashboard")["containers"][0]
    assert _env(container)["SFMLOPS_UI_BASE_PATH"]["value"] == "/"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": STREAMLIT_HEALTH, "port": "http"}
    assert _ingress_paths(rendered)["/"] == "sfmlops-dashboard"


@pytest.mark.parametrize("base_path", ["/dashboard", "/dashboard/", "/tools/dashboard"])
def test_a_dashboard_base_path_moves_probes_and_ingress_together(base_path: str) -> None:
    text = helm_template([], [f"dashboard.basePath={base_path}"]).stdout
    objects = [o for o in yaml.safe_load_all(text) if o]
    rendered = Rendered("base-path", text, objects)
    container = _pod(rendered, "sfmlops-dashboard")["containers"][0]
    expected = base_path.rstrip("/")
    assert _env(container)["SFMLOPS_UI_BASE_PATH"]["value"] == expected
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == expected + STREAMLIT_HEALTH
    assert _ingress_paths(rendered)[expected] == "sfmlops-dashboard"


@pytest.mark.parametrize(
    "override",
    [
        "dashboard.basePath=dashboard",
        "dashboard.basePath=/a//b",
        "api.rootPath=/",
        "api.rootPath=/a.b",
    ],
)
def test_paths_the_ingress_cannot_serve_are_refused(override: str) -> None:
    result = helm_template([], [override], check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


def test_the_api_serves_under_its_ingress_prefix(rendered: Rendered) -> None:
    container = _pod(rendered, "sfmlops-api")["containers"][0]
    args = container["args"]
    assert args[0] == "serve"
    assert int(_option(args, "--port")) == _service_port(rendered, "sfmlops-api")["port"]
    assert _option(args, "--host") == "0.0.0.0"
    root_path = _env(container)["SFMLOPS_API_ROOT_PATH"]["value"]
    # The Ingress strips the prefix (rewrite to /$2); the API knows it for the links in /docs.
    assert _ingress_paths(rendered)[f"{root_path}(/|$)(.*)"] == "sfmlops-api"


def test_api_probes_do_not_wait_for_a_model(rendered: Rendered) -> None:
    container = _pod(rendered, "sfmlops-api")["containers"][0]
    # /ready answers 503 until a champion exists: as readiness it would keep a fresh install's
    # API (the way the first training is submitted) out of its Service for good.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
