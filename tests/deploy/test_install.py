"""A fresh install needs no manual step: hook Jobs migrate and bootstrap, the chart refuses a
cluster without the CRDs it renders, kept Secrets are never regenerated blind, NOTES give URLs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import (
    CHART,
    CLUSTER_APIS,
    ENDPOINTS,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    Rendered,
    admitted,
    helm_args,
    helm_template,
    labels_of,
    render_values,
    run,
    tool,
)

# Every generated Secret named instead: an upgrade renders without the cluster's Secrets.
EXISTING_SECRETS = [
    "postgresql.auth.existingSecret=sfmlops-db",
    "api.auth.existingSecret=sfmlops-token",
    "dashboard.auth.existingSecret=sfmlops-dashboard",
    "mlflow.modelSigning.existingSecret=sfmlops-model-signing-managed",
    "mlflow.auth.existingSecret=sfmlops-mlflow-admin",
    "mlflow.auth.writer.existingSecret=sfmlops-mlflow-training",
    "mlflow.auth.reader.existingSecret=sfmlops-mlflow-api",
    "airflowMetadata.enabled=false",
]


def _hook(job: dict[str, Any]) -> tuple[set[str], int]:
    annotations = job["metadata"]["annotations"]
    return set(annotations["helm.sh/hook"].split(",")), int(annotations["helm.sh/hook-weight"])


def _container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def test_migrations_run_after_the_bundled_database_and_its_roles_exist(
    rendered_all: dict[str, Rendered],
) -> None:
    job = rendered_all["defaults"].get("Job", f"{RELEASE}-migrations")
    assert job is not None
    # The release creates PostgreSQL: a pre-install hook would wait for a database not yet there.
    # The Job logs in as the application role, which the new PostgreSQL pod makes: a pre-upgrade
    # hook would wait for a role that the first upgrade to such a release has not made yet.
    assert _hook(job)[0] == {"post-install", "post-upgrade"}
    container = _container(job)
    assert [*container["command"], *container["args"]] == ["sfmlops", "init"]
    policy = job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert set(policy.split(",")) == {"before-hook-creation", "hook-succeeded"}
    assert job["spec"]["backoffLimit"] >= 3  # a starting database refuses the first tries


def test_migrations_run_before_upgrades_without_database_roles() -> None:
    rendered = render_values("no-roles", [], ["postgresql.databaseRoles.enabled=false"])
    job = rendered.get("Job", f"{RELEASE}-migrations")
    assert job is not None
    assert _hook(job)[0] == {"post-install", "pre-upgrade"}


def test_migrations_run_before_install_on_an_external_database(
    rendered_all: dict[str, Rendered],
) -> None:
    job = rendered_all["external-database"].get("Job", f"{RELEASE}-migrations")
    assert job is not None
    assert _hook(job)[0] == {"pre-install", "pre-upgrade"}


def test_migrations_need_nothing_the_release_creates_later(rendered: Rendered) -> None:
    job = rendered.get("Job", f"{RELEASE}-migrations")
    assert job is not None
    container = _container(job)
    # Before an install the endpoint ConfigMap does not exist; before an upgrade it is stale.
    assert "envFrom" not in container
    env = {entry["name"]: entry.get("value") for entry in container["env"]}
    endpoints = rendered.get("ConfigMap", ENDPOINTS)["data"]  # type: ignore[index]
    for key in ("SFMLOPS_DB_HOST", "SFMLOPS_DB_PORT", "SFMLOPS_DB_NAME", "SFMLOPS_DB_USER"):
        assert env[key] == endpoints[key], key
    assert "SFMLOPS_DATABASE_URL" in env
    password = next(e for e in container["env"] if e["name"] == "SFMLOPS_DB_PASSWORD")
    secret = password["valueFrom"]["secretKeyRef"]["name"]
    if rendered.name == "external-database":
        return  # a Secret made before the release (required by the values schema)
    hook, _ = _hook(job)
    # The generated Secret is a release object: it exists for a post-install hook only.
    assert rendered.get("Secret", secret) is not None
    assert "pre-install" not in hook


def test_bootstrap_loads_and_trains_after_the_migrations(
    rendered_all: dict[str, Rendered],
) -> None:
    rendered = rendered_all["everything"]
    bootstrap = rendered.get("Job", f"{RELEASE}-bootstrap")
    migrations = rendered.get("Job", f"{RELEASE}-migrations")
    assert bootstrap is not None
    assert migrations is not None
    hooks, weight = _hook(bootstrap)
    assert hooks == {"post-install", "post-upgrade"}
    assert weight > _hook(migrations)[1]
    container = _container(bootstrap)
    assert [*container["command"], *container["args"][:1]] == ["sfmlops", "bootstrap"]
    assert rendered_all["defaults"].get("Job", f"{RELEASE}-bootstrap") is None


def test_the_producer_sends_stored_sales_after_the_bootstrap_loaded_them(
    rendered_all: dict[str, Rendered],
) -> None:
    # On a fresh install the database is empty until the bootstrap hook: a plain Job would fail
    # on "no sales records" before it. Once per install: an upgrade sends nothing.
    for scenario in ("everything", "local", "kafka-sasl"):
        rendered = rendered_all[scenario]
        producer = rendered.get("Job", f"{RELEASE}-producer")
        bootstrap = rendered.get("Job", f"{RELEASE}-bootstrap")
        assert producer is not None, scenario
        assert bootstrap is not None, scenario
        hooks, weight = _hook(producer)
        assert hooks == {"post-install"}
        assert weight > _hook(bootstrap)[1]
        policy = producer["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
        assert set(policy.split(",")) == {"before-hook-creation", "hook-succeeded"}
    # The local install's producer sends one live day, not the million stored rows.
    local = rendered_all["local"].get("Job", f"{RELEASE}-producer")
    assert _container(local)["args"] == ["produce", "--from-db", "--live", "--max-rate"]


@pytest.mark.parametrize(
    ("name", "overrides", "extra", "plain_job"),
    [
        # The release creates the bundled PostgreSQL: nothing to send at install without the
        # bootstrap; by the next upgrade the data may have been loaded by hand.
        ("install", [], [], False),
        ("upgrade", EXISTING_SECRETS, ["--is-upgrade"], True),
        # An external database may hold the sales already.
        ("external", SCENARIOS["external-database"][1], [], True),
    ],
)
def test_without_the_bootstrap_the_producer_runs_only_where_data_may_be_stored(
    name: str, overrides: list[str], extra: list[str], plain_job: bool
) -> None:
    text = helm_template(
        [], [*overrides, "producer.enabled=true", "bootstrap.enabled=false"], extra=extra
    ).stdout
    jobs = {
        item["metadata"]["name"]: item
        for item in yaml.safe_load_all(text)
        if item and item["kind"] == "Job"
    }
    producers = [job for job in jobs if "producer" in job]
    assert producers == ([f"{RELEASE}-producer-1"] if plain_job else []), name
    if plain_job:
        # One plain Job per release revision: a Job's pod template cannot change.
        assert "helm.sh/hook" not in jobs[producers[0]]["metadata"].get("annotations", {})


def test_bootstrap_signs_the_first_champion_with_the_api_s_key(
    rendered_all: dict[str, Rendered],
) -> None:
    rendered = rendered_all["everything"]

    def signing_key(container: dict[str, Any]) -> dict[str, Any]:
        found = [e for e in container.get("env", []) if e["name"] == "SFMLOPS_MODEL_SIGNING_KEY"]
        assert len(found) == 1, container["name"]
        return dict(found[0]["valueFrom"]["secretKeyRef"])

    job = rendered.get("Job", f"{RELEASE}-bootstrap")
    api = rendered.get("Deployment", f"{RELEASE}-api")
    assert job is not None
    assert api is not None
    bootstrap = _container(job)
    api_container = api["spec"]["template"]["spec"]["containers"][0]
    assert signing_key(bootstrap) == signing_key(api_container)
    assert rendered.get("Secret", signing_key(bootstrap)["name"]) is not None


def test_bootstrap_may_train_a_subset_of_stores(tmp_path: Path) -> None:
    values = tmp_path / "bootstrap.yaml"
    values.write_text('bootstrap: {enabled: true, args: [--train-stores, "3"]}\n')
    rendered = render_values("bootstrap-subset", [str(values)], [])
    job = rendered.get("Job", f"{RELEASE}-bootstrap")
    assert job is not None
    assert _container(job)["args"] == ["bootstrap", "--train-stores", "3"]


def test_the_hook_commands_exist_in_this_sfmlops() -> None:
    for command, option in (("init", "--help"), ("bootstrap", "--train-stores")):
        result = subprocess.run(
            [sys.executable, "-m", "sfmlops", command, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert option in result.stdout, command


@pytest.mark.parametrize(
    "target",
    [("StatefulSet", f"{RELEASE}-postgresql"), ("Deployment", f"{RELEASE}-mlflow")],
)
def test_network_policies_admit_the_hook_jobs(
    target: tuple[str, str], rendered_all: dict[str, Rendered]
) -> None:
    rendered = rendered_all["everything"]
    target_labels = labels_of(rendered, *target)
    bootstrap = labels_of(rendered, "Job", f"{RELEASE}-bootstrap")
    assert admitted(rendered, target_labels, bootstrap, None)
    if target[0] == "StatefulSet":
        migrations = labels_of(rendered, "Job", f"{RELEASE}-migrations")
        assert admitted(rendered, target_labels, migrations, None)


def test_the_bootstrap_may_submit_ray_jobs(rendered_all: dict[str, Rendered]) -> None:
    rendered = rendered_all["everything"]
    ray = labels_of(rendered, "RayCluster", f"{RELEASE}-ray")
    assert admitted(rendered, ray, labels_of(rendered, "Job", f"{RELEASE}-bootstrap"), None)


# --- the CRDs the chart renders objects of ---------------------------------------------


def test_without_kuberay_s_crds_the_install_fails_with_what_to_do() -> None:
    apis = [api for api in CLUSTER_APIS if not api.startswith("ray.io/")]
    result = helm_template([], [], check=False, api_versions=apis)
    assert result.returncode != 0
    assert "ray.io/v1 RayCluster" in result.stderr
    assert "KubeRay operator" in result.stderr
    assert "ServiceMonitor" not in result.stderr


def test_without_the_prometheus_operator_s_crds_the_install_fails() -> None:
    result = helm_template([], [], check=False, api_versions=["ray.io/v1/RayCluster"])
    assert result.returncode != 0
    assert "monitoring.coreos.com/v1 ServiceMonitor" in result.stderr
    assert "monitoring.coreos.com/v1 PodMonitor" in result.stderr
    assert "monitoring.coreos.com/v1 PrometheusRule" in result.stderr


def test_the_gateway_routes_need_gateway_api() -> None:
    apis = [api for api in CLUSTER_APIS if not api.startswith("gateway.")]
    result = helm_template([], ["gateway.enabled=true"], check=False, api_versions=apis)
    assert result.returncode != 0
    assert "HTTPRoute" in result.stderr


def test_a_release_without_crd_objects_needs_no_crds() -> None:
    overrides = ["ray.enabled=false", "monitoring.enabled=false"]
    result = helm_template([], overrides, api_versions=[])
    kinds = {item["kind"] for item in yaml.safe_load_all(result.stdout) if item}
    assert "RayCluster" not in kinds
    assert "Deployment" in kinds


# --- Secrets kept, never regenerated blind ---------------------------------------------


def test_an_upgrade_that_cannot_see_the_secrets_fails_instead_of_regenerating() -> None:
    # `helm template --is-upgrade` renders like `helm upgrade --dry-run` or a GitOps tool: no
    # cluster to look the live Secrets up in. New random values would lock out the data.
    result = helm_template([], [], check=False, extra=["--is-upgrade"])
    assert result.returncode != 0
    assert f"Secret {NAMESPACE}/{RELEASE}-postgresql (key password) is not visible" in result.stderr
    assert "--dry-run=server" in result.stderr


def test_an_upgrade_with_existing_secrets_renders_without_the_cluster() -> None:
    result = helm_template([], EXISTING_SECRETS, extra=["--is-upgrade"])
    secrets = [o for o in yaml.safe_load_all(result.stdout) if o and o["kind"] == "Secret"]
    assert secrets == []


def test_an_install_generates_each_secret() -> None:
    result = helm_template([], [])
    secrets = [o for o in yaml.safe_load_all(result.stdout) if o and o["kind"] == "Secret"]
    assert len(secrets) >= 4
    assert all(s["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for s in secrets)


# --- Gateway API -----------------------------------------------------------------------


def test_gateway_routes_reach_the_api_and_dashboard(rendered_all: dict[str, Rendered]) -> None:
    rendered = rendered_all["everything"]
    routes = {r["metadata"]["name"]: r for r in rendered.of_kind("HTTPRoute")}
    assert set(routes) == {f"{RELEASE}-api", f"{RELEASE}-dashboard"}
    for route in routes.values():
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert route["spec"]["parentRefs"]
        for rule in route["spec"]["rules"]:
            for backend in rule["backendRefs"]:
                service = rendered.get("Service", backend["name"])
                assert service is not None
                assert backend["port"] in {p["port"] for p in service["spec"]["ports"]}
    # Only the versioned API and the probes: /metrics, /docs and /openapi.json stay private.
    rewrites = {
        rule["matches"][0]["path"]["value"]: rule["filters"][0]["urlRewrite"]["path"]
        for rule in routes[f"{RELEASE}-api"]["spec"]["rules"]
    }
    assert rewrites == {
        f"/api{path}": {"type": "ReplacePrefixMatch", "replacePrefixMatch": path}
        for path in ("/v1", "/health", "/ready")
    }
    api = labels_of(rendered, "Deployment", f"{RELEASE}-api")
    dashboard = labels_of(rendered, "Deployment", f"{RELEASE}-dashboard")
    gateway_namespace = "gateway"
    assert admitted(rendered, api, None, gateway_namespace)
    assert admitted(rendered, dashboard, None, gateway_namespace)
    assert not rendered_all["defaults"].of_kind("HTTPRoute")
    assert not admitted(rendered_all["defaults"], dashboard, None, gateway_namespace)


# --- NOTES.txt -------------------------------------------------------------------------


def _notes(tmp_path: Path, overrides: list[str]) -> str:
    """NOTES.txt as `helm install` prints it: rendered through a probe template in a copy."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    probe = '{{ include "sfmlops-helm/templates/NOTES.txt" . | toJson }}'
    (chart / "templates" / "notes-probe.yaml").write_text(f"notes: {probe}\n")
    command = [tool("helm"), "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    command += [*helm_args(*SCENARIOS["defaults"]), "--set", "checkCRDs=false"]
    for override in overrides:
        command += ["--set", override]
    result = run([*command, "--show-only", "templates/notes-probe.yaml"])
    return str(yaml.safe_load(result.stdout)["notes"])


def test_notes_print_the_urls(tmp_path: Path) -> None:
    notes = _notes(tmp_path, ["ingress.host=sfmlops.example.com"])
    assert "http://sfmlops.example.com/api/v1/" in notes
    assert "http://sfmlops.example.com/api/ready" in notes
    assert "http://sfmlops.example.com/\n" in notes
    assert f"port-forward svc/{RELEASE}-api 4242:4242" in notes
    assert f"get secret {RELEASE}-api-token" in notes
    assert f"get secret {RELEASE}-dashboard-password" in notes


def test_notes_say_when_the_producer_runs_without_the_bootstrap(tmp_path: Path) -> None:
    notes = _notes(tmp_path, ["producer.enabled=true"])
    assert "The producer sends stored sales: it runs at the next `helm upgrade`" in notes


def test_notes_follow_tls_and_the_gateway(tmp_path: Path) -> None:
    tls = _notes(
        tmp_path,
        ["ingress.host=a.example.com", "ingress.tls.enabled=true", "ingress.tls.secretName=a-tls"],
    )
    assert "https://a.example.com/api/v1/" in tls
    gateway = _notes(
        tmp_path / "gateway",
        ["ingress.enabled=false", "gateway.enabled=true", "gateway.hostnames={b.example.com}"],
    )
    assert "Through the Gateway" in gateway
    assert "http://b.example.com/api/v1/" in gateway
