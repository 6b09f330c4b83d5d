"""The API and dashboard Deployments: the commands they run, their settings, their probes, and
the Ingress paths they are served under."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.deploy import ENDPOINTS, NAMESPACE, Rendered, helm_template, pod_specs

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
    if rendered.of_kind("Ingress"):  # the local overlay has Gateway routes only (test_install)
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
    if not rendered.of_kind("Ingress"):
        return  # the local overlay has Gateway routes only (test_install checks them)
    # The Ingress strips the prefix (rewrite to /$1); the API knows it as its root path.
    paths = {p: s for p, s in _ingress_paths(rendered).items() if s == "sfmlops-api"}
    assert len(paths) == 1
    pattern = re.compile(next(iter(paths)))
    for public in ("/v1/stores", "/v1/stores/1/forecast", "/health", "/ready"):
        match = pattern.fullmatch(root_path + public)
        assert match, public
        assert "/" + match.group(1) == public
    # /metrics is scraped inside the cluster; the docs describe every endpoint to anyone.
    for internal in ("/metrics", "/docs", "/openapi.json", "/redoc", "/v1x", ""):
        assert not pattern.fullmatch(root_path + internal), internal


def test_api_probes_do_not_wait_for_a_model_but_readiness_pings_the_database(
    rendered: Rendered,
) -> None:
    container = _pod(rendered, "sfmlops-api")["containers"][0]
    # Liveness never touches the database (an outage must not restart every pod); readiness
    # does, without waiting for a champion a fresh install does not have yet.
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    readiness = container["readinessProbe"]
    assert readiness["httpGet"] == {"path": "/ready?require_model=false", "port": "http"}
    assert readiness["timeoutSeconds"] > 2  # the API's own ping gives up after 2 s


def test_the_dashboard_signs_people_in_with_a_password_by_default(rendered: Rendered) -> None:
    container = _pod(rendered, "sfmlops-dashboard")["containers"][0]
    reference = _env(container)["SFMLOPS_UI_PASSWORD"]["valueFrom"]["secretKeyRef"]
    secret = rendered.get("Secret", reference["name"])
    if secret is not None:  # generated (else an existing Secret the scenario names)
        assert len(secret["data"][reference["key"]]) >= 16
    assert _option(container["args"], "--host") == "0.0.0.0"


def test_with_oauth2_proxy_the_dashboard_is_reachable_only_through_it() -> None:
    result = helm_template(
        [],
        [
            "dashboard.auth.oauth2Proxy.enabled=true",
            "dashboard.auth.oauth2Proxy.existingSecret=dashboard-oidc",
            "dashboard.auth.oauth2Proxy.oidcIssuerUrl=https://login.example.com",
        ],
    )
    objects = [item for item in yaml.safe_load_all(result.stdout) if item]
    deployment = next(
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "sfmlops-dashboard"
    )
    streamlit, proxy = deployment["spec"]["template"]["spec"]["containers"]
    assert _option(streamlit["args"], "--host") == "127.0.0.1"
    assert "ports" not in streamlit
    assert "SFMLOPS_UI_PASSWORD" not in _env(streamlit)
    assert proxy["ports"] == [{"name": "http", "containerPort": 8000}]
    assert "--upstream=http://127.0.0.1:8501/" in proxy["args"]
    assert "--oidc-issuer-url=https://login.example.com" in proxy["args"]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in proxy["env"]} == {"dashboard-oidc"}
    assert not any(
        o["kind"] == "Secret" and o["metadata"]["name"] == "sfmlops-dashboard-password"
        for o in objects
    )
