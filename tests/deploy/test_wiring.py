"""Wiring of the rendered chart: references resolve, endpoints match Services, Ingress routes
reach the API and dashboard, Secrets hold no literal password, policies admit the real flows."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.deploy import (
    CHART,
    ENDPOINTS,
    NAMESPACE,
    RELEASE,
    RELEASES,
    ROOT,
    SCENARIOS,
    Rendered,
    admitted,
    helm_template,
    labels_of,
    load_yaml,
    pod_labels,
    pod_specs,
    render,
    render_values,
)

# Secrets the scenarios name as existing (made outside the chart).
# Made outside the chart: sfmlops-kafka-clients by scripts/deploy.sh, with the Kafka release's
# own Secret of the same passwords (values-kafka.yaml, kafkaAuth).
EXTERNAL_SECRETS = {"cloudsql-sfmlops", "sfmlops-api-token-managed", "sfmlops-kafka-clients"}


def _env_entries(rendered: Rendered) -> list[tuple[str, str, dict[str, Any]]]:
    """(workload, namespace, env entry or envFrom entry) of every container."""
    entries = []
    for item in rendered.objects:
        namespace = item["metadata"].get("namespace", "")  # none: cluster-scoped, no pods
        for label, pod in pod_specs(item):
            for container in list(pod.get("initContainers", [])) + list(pod["containers"]):
                entries += [(label, namespace, entry) for entry in container.get("env", [])]
                entries += [(label, namespace, entry) for entry in container.get("envFrom", [])]
    return entries


def test_endpoint_configmap_is_in_every_listed_namespace(rendered: Rendered) -> None:
    namespaces = load_yaml(CHART / "values.yaml")["endpoints"]["namespaces"]
    for file in SCENARIOS[rendered.name][0]:
        namespaces = load_yaml(ROOT / file).get("endpoints", {}).get("namespaces", namespaces)
    expected = {NAMESPACE, *namespaces}
    found = {
        c["metadata"]["namespace"]
        for c in rendered.of_kind("ConfigMap")
        if c["metadata"]["name"] == ENDPOINTS
    }
    assert found == expected
    copies = [
        c["data"] for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"] == ENDPOINTS
    ]
    assert all(copy == copies[0] for copy in copies)


def _service_port(rendered: Rendered, host: str, port: int) -> bool:
    """Whether host (name.namespace.svc) and port belong to a rendered Service."""
    name, namespace = host.split(".")[:2]
    service = rendered.get("Service", name, namespace)
    return service is not None and any(p["port"] == port for p in service["spec"]["ports"])


def test_configmap_endpoints_match_services(rendered: Rendered) -> None:
    data = rendered.get("ConfigMap", ENDPOINTS)["data"]  # type: ignore[index]
    for key in ("SFMLOPS_MLFLOW_TRACKING_URI", "SFMLOPS_API_URL"):
        url = urlsplit(data[key])
        assert url.scheme == "http"
        assert _service_port(rendered, url.hostname or "", url.port or 80), key
    if rendered.name != "external-database":
        assert _service_port(rendered, data["SFMLOPS_DB_HOST"], int(data["SFMLOPS_DB_PORT"]))
    # KubeRay names the head Service <cluster>-head-svc and exposes the head container's ports.
    cluster = rendered.of_kind("RayCluster")[0]
    head_ports = {
        p["containerPort"]
        for p in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    }
    url = urlsplit(data["SFMLOPS_RAY_JOBS_URL"])
    assert url.scheme == "http"
    assert url.hostname == f"{cluster['metadata']['name']}-head-svc.{NAMESPACE}.svc"
    assert url.port in head_ports
    # Training goes through the job API; no pod is pointed at the Ray Client by default (inside
    # a Ray job it would win over the job's own RAY_ADDRESS in older sfmlops releases).
    assert "SFMLOPS_RAY_ADDRESS" not in data


def test_the_ray_client_address_is_given_only_when_enabled() -> None:
    rendered = render_values("ray-client", [], ["ray.client.enabled=true"])
    data = rendered.get("ConfigMap", ENDPOINTS)["data"]  # type: ignore[index]
    url = urlsplit(data["SFMLOPS_RAY_ADDRESS"])
    assert url.scheme == "ray"
    assert url.hostname == f"{RELEASE}-ray-head-svc.{NAMESPACE}.svc"
    assert url.port == 10001


def test_configmap_points_at_the_separate_releases() -> None:
    values = load_yaml(CHART / "values.yaml")["endpoints"]
    kafka = load_yaml(ROOT / "values-kafka.yaml")
    host, port = values["kafkaBootstrapServers"].split(":")
    assert host == f"{kafka['fullnameOverride']}.{RELEASES['KAFKA_NAMESPACE']}.svc"
    assert (
        int(port)
        == kafka["service"]["ports"]["client"]
        == kafka["listeners"]["client"]["containerPort"]
    )
    airflow = urlsplit(values["airflowUrl"])
    # The Airflow chart names its API server Service <release>-api-server, port 8080.
    assert (
        airflow.hostname
        == f"{RELEASES['AIRFLOW_RELEASE']}-api-server.{RELEASES['AIRFLOW_NAMESPACE']}.svc"
    )
    assert airflow.port == 8080


def test_every_referenced_object_exists(rendered: Rendered) -> None:
    missing = []
    for label, namespace, entry in _env_entries(rendered):
        source = entry.get("valueFrom", entry)
        if ref := source.get("secretKeyRef") or source.get("secretRef"):
            secret = rendered.get("Secret", ref["name"], namespace)
            if secret is None and ref["name"] not in EXTERNAL_SECRETS:
                missing.append(f"{label}: Secret {ref['name']}")
            elif secret is not None and "key" in ref and ref["key"] not in secret["data"]:
                missing.append(f"{label}: Secret {ref['name']} has no key {ref['key']}")
        if ref := source.get("configMapKeyRef") or source.get("configMapRef"):
            config = rendered.get("ConfigMap", ref["name"], namespace)
            if config is None:
                missing.append(f"{label}: ConfigMap {ref['name']}")
            elif "key" in ref and ref["key"] not in config["data"]:
                missing.append(f"{label}: ConfigMap {ref['name']} has no key {ref['key']}")
    for item in rendered.objects:
        namespace = item["metadata"].get("namespace", "")  # none: cluster-scoped, no pods
        for label, pod in pod_specs(item):
            for volume in pod.get("volumes", []):
                references = [
                    (
                        "PersistentVolumeClaim",
                        volume.get("persistentVolumeClaim", {}).get("claimName"),
                    ),
                    ("ConfigMap", volume.get("configMap", {}).get("name")),
                    ("Secret", volume.get("secret", {}).get("secretName")),
                ]
                missing += [
                    f"{label}: {kind} {name}"
                    for kind, name in references
                    if name
                    and name not in EXTERNAL_SECRETS
                    and rendered.get(kind, name, namespace) is None
                ]
    for target in rendered.of_kind("HorizontalPodAutoscaler"):
        ref = target["spec"]["scaleTargetRef"]
        if rendered.get(ref["kind"], ref["name"]) is None:
            missing.append(f"HPA target {ref['name']}")
    assert not missing, missing


def test_every_service_selects_a_workload(rendered: Rendered) -> None:
    pods = [labels for item in rendered.objects for labels in pod_labels(item)]
    for service in rendered.of_kind("Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pods), service["metadata"][
            "name"
        ]


def test_database_url_is_composed_from_earlier_variables(rendered: Rendered) -> None:
    config = rendered.get("ConfigMap", ENDPOINTS)["data"]  # type: ignore[index]
    for item in rendered.objects:
        for label, pod in pod_specs(item):
            for container in pod["containers"]:
                names = set()
                if any(
                    e.get("configMapRef", {}).get("name") == ENDPOINTS
                    for e in container.get("envFrom", [])
                ):
                    names |= config.keys()
                for entry in container.get("env", []):
                    # Kubernetes expands $(VAR) only from variables defined before the entry.
                    for used in re.findall(r"\$\((\w+)\)", entry.get("value", "")):
                        assert used in names, (
                            f"{label}: {entry['name']} uses {used} before it is set"
                        )
                    names.add(entry["name"])


def test_ingress_routes_reach_api_and_dashboard(rendered: Rendered) -> None:
    if not rendered.of_kind("Ingress"):
        # The local overlay routes through Gateway API (test_install.py checks the HTTPRoutes).
        names = {route["metadata"]["name"] for route in rendered.of_kind("HTTPRoute")}
        assert names == {"sfmlops-api", "sfmlops-dashboard"}
        return
    routes = {}
    for ingress in rendered.of_kind("Ingress"):
        assert ingress["spec"]["ingressClassName"] == "nginx"
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = rendered.get("Service", backend["name"])
                assert service is not None, backend["name"]
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
                routes[path["path"]] = (backend["name"], ingress["metadata"]["annotations"])
    api_service, api_annotations = routes["/api/(v1/.*|health|ready)$"]
    assert api_service == "sfmlops-api"
    assert api_annotations["nginx.ingress.kubernetes.io/rewrite-target"] == "/$1"
    assert routes["/"][0] == "sfmlops-dashboard"
    # The API knows its public prefix.
    api = rendered.get("Deployment", "sfmlops-api")["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert {"name": "SFMLOPS_API_ROOT_PATH", "value": "/api"} in api["env"]


def test_gke_ingress_has_host_and_tls(rendered_all: dict[str, Rendered]) -> None:
    for ingress in rendered_all["gke"].of_kind("Ingress"):
        assert ingress["spec"]["tls"][0]["hosts"] == ["sfmlops.example.com"]
        assert ingress["spec"]["rules"][0]["host"] == "sfmlops.example.com"


def test_mlflow_accepts_its_service_names_and_reaches_its_store(rendered: Rendered) -> None:
    mlflow = rendered.get("Deployment", "sfmlops-mlflow")
    container = mlflow["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    env = {e["name"]: e.get("value") for e in container["env"]}
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    uri = urlsplit(rendered.get("ConfigMap", ENDPOINTS)["data"]["SFMLOPS_MLFLOW_TRACKING_URI"])  # type: ignore[index]
    assert uri.netloc in allowed
    assert uri.hostname in allowed
    assert "sfmlops-mlflow:5050" in allowed
    assert "*" not in allowed
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith(
        "postgresql+psycopg2://$(SFMLOPS_DB_USER):$(SFMLOPS_DB_PASSWORD)@"
    )
    if rendered.name == "gke":
        assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("gs://")
        assert rendered.get("PersistentVolumeClaim", "sfmlops-mlflow-artifacts") is None
    else:
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert env["MLFLOW_ARTIFACTS_DESTINATION"] in mounts


def test_stream_checkpoints_live_on_a_volume(rendered: Rendered) -> None:
    # The continuous Deployment (test_stream_runner) or the CronJob, one batch at a time.
    job = rendered.get("CronJob", "sfmlops-stream") or rendered.get("Deployment", "sfmlops-stream")
    assert job is not None
    _, pod = next(pod_specs(job))
    home = rendered.get("ConfigMap", ENDPOINTS)["data"]["SFMLOPS_HOME"]  # type: ignore[index]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == home)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == "sfmlops-stream-home"
    if job["kind"] == "CronJob":
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
    else:
        assert job["spec"]["replicas"] == 1


def _secret_values(rendered: Rendered) -> dict[tuple[str, str, str], str]:
    return {
        (s["metadata"]["namespace"], s["metadata"]["name"], key): base64.b64decode(value).decode()
        for s in rendered.of_kind("Secret")
        for key, value in s.get("data", {}).items()
    }


def test_no_secret_holds_a_literal_password() -> None:
    first = _secret_values(render("defaults"))
    second = _secret_values(render("defaults"))
    assert first.keys() == second.keys()
    assert len(first) >= 5
    sources = "\n".join(
        p.read_text() for p in [*CHART.rglob("*.yaml"), *ROOT.glob("values-*.yaml")]
    )
    for key, value in first.items():
        if "username" in key[2].lower():  # MLflow's user names are values, not secrets
            continue
        # Generated per install (kept afterwards through lookup), never written in the chart.
        assert value != second[key], f"{key} is the same on every install"
        secret = urlsplit(value).password if "://" in value else value
        assert secret
        assert len(secret) >= 32, key
        assert secret not in sources, key
    assert not any(s.get("stringData") for s in render("defaults").of_kind("Secret"))


def test_secrets_survive_upgrades_and_uninstall(rendered: Rendered) -> None:
    for secret in rendered.of_kind("Secret"):
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    template = (CHART / "templates" / "secrets.yaml").read_text()
    assert 'lookup "v1" "Secret"' in template


def test_airflow_release_finds_what_the_chart_writes_for_it(
    rendered_all: dict[str, Rendered],
) -> None:
    rendered = rendered_all["defaults"]
    airflow = load_yaml(ROOT / "values-airflow.yaml")
    namespace = RELEASES["AIRFLOW_NAMESPACE"]
    metadata = rendered.get("Secret", airflow["data"]["metadataSecretName"], namespace)
    assert metadata is not None
    connection = urlsplit(base64.b64decode(metadata["data"]["connection"]).decode())
    assert connection.scheme == "postgresql"
    assert _service_port(rendered, connection.hostname or "", connection.port or 0)
    assert connection.path == "/airflow"
    assert "airflow" in load_yaml(CHART / "values.yaml")["postgresql"]["extraDatabases"]
    keys = {
        "fernetKeySecretName": "fernet-key",
        "apiSecretKeySecretName": "api-secret-key",
        "jwtSecretName": "jwt-secret",
    }
    for value_key, secret_key in keys.items():
        secret = rendered.get("Secret", airflow[value_key], namespace)
        assert secret is not None
        assert secret_key in secret["data"], value_key
    fernet = base64.b64decode(
        rendered.get("Secret", airflow["fernetKeySecretName"], namespace)["data"]["fernet-key"]
    )  # type: ignore[index]
    assert len(base64.urlsafe_b64decode(fernet)) == 32
    env_from = yaml.safe_load(airflow["extraEnvFrom"])
    tasks = load_yaml(CHART / "values.yaml")["airflowTasks"]["configMapName"]
    assert env_from == [{"configMapRef": {"name": ENDPOINTS}}, {"configMapRef": {"name": tasks}}]
    for config_map in (ENDPOINTS, tasks):
        assert rendered.get("ConfigMap", config_map, namespace) is not None
    token = next(e for e in yaml.safe_load(airflow["extraEnv"]) if e["name"] == "SFMLOPS_API_TOKEN")
    ref = token["valueFrom"]["secretKeyRef"]
    copy = rendered.get("Secret", ref["name"], namespace)
    original = rendered.get("Secret", ref["name"], NAMESPACE)
    assert copy is not None
    assert original is not None
    assert copy["data"][ref["key"]] == original["data"][ref["key"]]


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (("Deployment", "sfmlops-api"), ("StatefulSet", "sfmlops-postgresql")),
        (("Deployment", "sfmlops-mlflow"), ("StatefulSet", "sfmlops-postgresql")),
        (("Deployment", "sfmlops-stream"), ("StatefulSet", "sfmlops-postgresql")),
        (("RayCluster", "sfmlops-ray"), ("StatefulSet", "sfmlops-postgresql")),
        (("Deployment", "sfmlops-api"), ("Deployment", "sfmlops-mlflow")),
        (("RayCluster", "sfmlops-ray"), ("Deployment", "sfmlops-mlflow")),
        (("Deployment", "sfmlops-dashboard"), ("Deployment", "sfmlops-api")),
        (("Deployment", "sfmlops-api"), ("RayCluster", "sfmlops-ray")),
    ],
)
def test_network_policies_admit_the_needed_flows(
    source: tuple[str, str], target: tuple[str, str], rendered_all: dict[str, Rendered]
) -> None:
    rendered = rendered_all["defaults"]
    assert admitted(rendered, labels_of(rendered, *target), labels_of(rendered, *source), None)


def test_network_policies_deny_the_rest(rendered_all: dict[str, Rendered]) -> None:
    rendered = rendered_all["defaults"]
    database = labels_of(rendered, "StatefulSet", "sfmlops-postgresql")
    # The dashboard talks to the API only; other namespaces reach the database only from Airflow.
    assert not admitted(
        rendered, database, labels_of(rendered, "Deployment", "sfmlops-dashboard"), None
    )
    assert not admitted(rendered, database, None, "ingress-nginx")
    assert admitted(rendered, database, None, "airflow")
    api = labels_of(rendered, "Deployment", "sfmlops-api")
    assert admitted(rendered, api, None, "ingress-nginx")
    assert admitted(rendered, api, None, "monitoring")
    default_deny = rendered.get("NetworkPolicy", "sfmlops-default-deny")
    assert default_deny["spec"]["policyTypes"] == ["Ingress"]  # type: ignore[index]
    assert "ingress" not in default_deny["spec"]  # type: ignore[operator]


def test_the_api_token_reaches_only_the_api_and_dashboard(rendered: Rendered) -> None:
    holders = {
        label
        for label, namespace, entry in _env_entries(rendered)
        if namespace == NAMESPACE and entry.get("name") == "SFMLOPS_API_TOKEN"
    }
    assert holders == {"Deployment/sfmlops-api", "Deployment/sfmlops-dashboard"}


def test_sfmlops_home_is_writable_wherever_it_is_read(rendered: Rendered) -> None:
    home = rendered.get("ConfigMap", ENDPOINTS)["data"]["SFMLOPS_HOME"]  # type: ignore[index]
    for item in rendered.objects:
        for label, pod in pod_specs(item):
            for container in pod["containers"]:
                # Every image that runs the sfmlops package (MLflow's image runs only MLflow).
                image = container["image"].rsplit("/", 1)[-1]
                runs_sfmlops = image.startswith("sfmlops-") and not image.startswith(
                    "sfmlops-mlflow"
                )
                read_only = container.get("securityContext", {}).get("readOnlyRootFilesystem")
                if runs_sfmlops and read_only:
                    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                    assert home in mounts, f"{label}/{container['name']}: {home} is read-only"


def test_each_kafka_client_connects_as_its_own_user(rendered_all: dict[str, Rendered]) -> None:
    users = {}
    for item in rendered_all["kafka-sasl"].objects:
        for label, pod in pod_specs(item):
            for container in pod["containers"]:
                env = {entry["name"]: entry for entry in container.get("env", [])}
                if "SFMLOPS_KAFKA_USERNAME" in env:
                    password = env["SFMLOPS_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"]
                    users[label] = (
                        env["SFMLOPS_KAFKA_SECURITY_PROTOCOL"]["value"],
                        env["SFMLOPS_KAFKA_USERNAME"]["value"],
                        password["name"],
                        password["key"],
                    )
    assert users == {
        "Job/sfmlops-producer": (
            "SASL_PLAINTEXT",
            "producer",
            "sfmlops-kafka-clients",
            "producer-password",
        ),
        "CronJob/sfmlops-stream": (
            "SASL_PLAINTEXT",
            "stream",
            "sfmlops-kafka-clients",
            "stream-password",
        ),
    }


def test_kafka_users_are_refused_with_the_stream_run_by_airflow() -> None:
    # Airflow's command pods get no Kafka user: they would fail at the broker every day.
    result = helm_template([], ["kafkaAuth.enabled=true", "stream.runBy=airflow"], check=False)
    assert result.returncode != 0
    assert "kafkaAuth.enabled needs stream.runBy=deployment or cronjob" in result.stderr
