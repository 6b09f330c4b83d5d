"""Airflow's command pods in the sfmlops namespace: the Role its scheduler gets, the settings
the chart hands Airflow (and the DAGs read), and the network flows the pods need."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.support.deploy import (
    CHART,
    ENDPOINTS,
    NAMESPACE,
    RELEASES,
    ROOT,
    SCENARIOS,
    Rendered,
    admission_refusals,
    admitted,
    helm_template,
    labels_of,
    load_yaml,
    pod_specs,
    render_values,
)

AIRFLOW_NAMESPACE = RELEASES["AIRFLOW_NAMESPACE"]
CHART_VALUES = load_yaml(CHART / "values.yaml")
TASKS = CHART_VALUES["airflowTasks"]["configMapName"]
TASKS_ACCOUNTS = CHART_VALUES["airflowTasks"]["serviceAccounts"]
ROLE = "sfmlops-airflow-tasks"
POLICY = f"{ROLE}-{NAMESPACE}"
# Exactly what a KubernetesPodOperator task does with its pod (start, find again after a
# restart, follow, mark checked, delete; logs; events): no exec, no other resource.
EXPECTED_RULES = {
    "pods": {"create", "get", "list", "watch", "patch", "delete"},
    "pods/log": {"get"},
    "events": {"get", "list", "watch"},
}


@pytest.fixture(params=sorted(set(SCENARIOS) - {"local"}))
def rendered(request: pytest.FixtureRequest, rendered_all: dict[str, Rendered]) -> Rendered:
    """Each scenario that hands work to an Airflow release (the local overlay has none)."""
    return rendered_all[str(request.param)]


@pytest.fixture(scope="module")
def dag_config() -> Iterator[Any]:
    """The DAGs' configuration module (plain Python: it imports nothing from Airflow)."""
    sys.path.insert(0, str(ROOT / "images" / "airflow" / "dags"))
    try:
        from sfmlops_orchestration import dag_config  # noqa: PLC0415

        yield dag_config
    finally:
        sys.path.remove(str(ROOT / "images" / "airflow" / "dags"))


def _settings(rendered: Rendered) -> dict[str, str]:
    config_map = rendered.get("ConfigMap", TASKS, AIRFLOW_NAMESPACE)
    assert config_map is not None
    data: dict[str, str] = config_map["data"]
    return data


def _stream_container(rendered: Rendered) -> dict[str, Any]:
    """The chart's stream job's container: its Deployment's or its CronJob's."""
    for kind in ("Deployment", "CronJob"):
        if rendered.get(kind, "sfmlops-stream") is not None:
            return _container(rendered, kind, "sfmlops-stream")
    raise AssertionError("no stream job rendered")


def _container(rendered: Rendered, kind: str, name: str) -> dict[str, Any]:
    item = rendered.get(kind, name)
    assert item is not None
    container: dict[str, Any] = next(pod_specs(item))[1]["containers"][0]
    return container


def test_the_scheduler_may_run_pods_here_and_nothing_more(rendered: Rendered) -> None:
    role = rendered.get("Role", ROLE)
    assert role is not None
    rules: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""]
        for resource in rule["resources"]:
            rules.setdefault(resource, set()).update(rule["verbs"])
    assert rules == EXPECTED_RULES
    binding = rendered.get("RoleBinding", ROLE)
    assert binding is not None
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": ROLE,
    }
    # The LocalExecutor runs tasks in the scheduler: its service account, named by the release.
    airflow = load_yaml(ROOT / "values-airflow.yaml")
    assert airflow["executor"] == "LocalExecutor"
    account = airflow["scheduler"]["serviceAccount"]
    assert account["create"] is True
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": AIRFLOW_NAMESPACE}
    ]
    # No ClusterRole: the rights end at this namespace.
    assert not rendered.of_kind("ClusterRole")
    assert not rendered.of_kind("ClusterRoleBinding")


def test_airflow_gets_the_image_namespace_and_secrets_of_this_release(rendered: Rendered) -> None:
    settings = _settings(rendered)
    assert settings["SFMLOPS_COMMAND_RUNNER"] == "kubernetes"
    # The Airflow Variables the DAGs template the pods with (sfmlops_image, sfmlops_namespace).
    stream = _stream_container(rendered)
    assert settings["AIRFLOW_VAR_SFMLOPS_IMAGE"] == stream["image"]
    assert settings["AIRFLOW_VAR_SFMLOPS_NAMESPACE"] == NAMESPACE
    assert rendered.get("ConfigMap", settings["SFMLOPS_POD_CONFIG_MAP"]) is not None
    assert settings["SFMLOPS_POD_CONFIG_MAP"] == ENDPOINTS
    # The same database password Secret as the chart's own pods.
    api = _container(rendered, "Deployment", "sfmlops-api")
    password = next(e for e in api["env"] if e["name"] == "SFMLOPS_DB_PASSWORD")
    reference = password["valueFrom"]["secretKeyRef"]
    assert settings["SFMLOPS_POD_DATABASE_SECRET"] == f"{reference['name']}:{reference['key']}"
    # The API's signing key: the pods' forecasts verify each bundle as the API does.
    signing = next(e for e in api["env"] if e["name"] == "SFMLOPS_MODEL_SIGNING_KEY")
    reference = signing["valueFrom"]["secretKeyRef"]
    assert rendered.get("Secret", reference["name"]) is not None
    assert settings["SFMLOPS_POD_SIGNING_SECRET"] == f"{reference['name']}:{reference['key']}"
    # The stream job's checkpoints: with runBy=airflow the DAG's `stream --once` resumes where
    # the last run stopped; otherwise the chart's runner owns them and the DAG has no stream task.
    claim = settings["SFMLOPS_POD_HOME_CLAIM"]
    if rendered.name == "airflow-stream":
        assert rendered.get("PersistentVolumeClaim", claim) is not None
        assert claim == "sfmlops-stream-home"
        assert settings["SFMLOPS_DAILY_STREAM_TASK"] == "true"
    else:
        assert claim == ""
        assert settings["SFMLOPS_DAILY_STREAM_TASK"] == "false"
    resources = json.loads(settings["SFMLOPS_POD_RESOURCES"])
    assert resources == CHART_VALUES["airflowTasks"]["resources"]


def test_the_dags_read_what_the_chart_renders(
    rendered_all: dict[str, Rendered], dag_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _settings(rendered_all["airflow-stream"]).items():
        monkeypatch.setenv(name, value)
    by_airflow = dag_config.DagConfig.from_environment()
    settings = _settings(rendered_all["defaults"])
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    config = dag_config.DagConfig.from_environment()
    assert config.command_runner == "kubernetes"
    assert config.pod_config_map == ENDPOINTS
    assert config.pod_database_secret == ("sfmlops-postgresql", "app-password")
    assert config.pod_signing_secret == ("sfmlops-model-signing", "key")
    # The default stream Deployment owns the checkpoints: the daily DAG runs no stream task and
    # mounts no claim; with runBy=airflow it runs `stream --once` on the chart's volume.
    assert config.daily_stream_task is False
    assert config.pod_home_claim is None
    assert by_airflow.daily_stream_task is True
    assert by_airflow.pod_home_claim == "sfmlops-stream-home"
    assert config.pod_labels == json.loads(settings["SFMLOPS_POD_LABELS"])
    assert config.pod_resources == json.loads(settings["SFMLOPS_POD_RESOURCES"])
    # MLflow authentication is on by default: the pods read the writer's credentials whole.
    assert config.pod_secrets == ("sfmlops-mlflow-writer",)
    # The DAGs' own defaults (outside the chart) are the chart's defaults for release sfmlops.
    assert json.loads(settings["SFMLOPS_POD_LABELS"]) == dag_config.POD_LABELS
    assert CHART_VALUES["airflowTasks"]["resources"] == dag_config.POD_RESOURCES


def test_command_pods_reach_the_database_and_mlflow_only(rendered: Rendered) -> None:
    labels = json.loads(_settings(rendered)["SFMLOPS_POD_LABELS"])
    mlflow = labels_of(rendered, "Deployment", "sfmlops-mlflow")
    assert admitted(rendered, mlflow, labels, None)
    if rendered.get("StatefulSet", "sfmlops-postgresql") is not None:
        database = labels_of(rendered, "StatefulSet", "sfmlops-postgresql")
        assert admitted(rendered, database, labels, None)
    # Nothing reaches the command pods: the default deny covers them (they carry the release).
    default_deny = rendered.get("NetworkPolicy", "sfmlops-default-deny")
    assert default_deny is not None
    assert default_deny["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    for target in (
        labels_of(rendered, "Deployment", "sfmlops-api"),
        labels_of(rendered, "RayCluster", "sfmlops-ray"),
        labels_of(rendered, "Deployment", "sfmlops-dashboard"),
    ):
        assert not admitted(rendered, target, labels, None)
    # Kafka (another release) admits clients by namespace: the pods run in this one.
    kafka = load_yaml(ROOT / "values-kafka.yaml")["networkPolicy"]["ingressNSMatchLabels"]
    assert kafka == {"kubernetes.io/metadata.name": NAMESPACE}


def test_airflow_itself_reaches_the_api_and_its_database_only(rendered: Rendered) -> None:
    # Its tasks call the API; commands needing MLflow run as pods here; Ray only via the API.
    assert admitted(rendered, labels_of(rendered, "Deployment", "sfmlops-api"), None, "airflow")
    assert not admitted(
        rendered, labels_of(rendered, "Deployment", "sfmlops-mlflow"), None, "airflow"
    )
    assert not admitted(rendered, labels_of(rendered, "RayCluster", "sfmlops-ray"), None, "airflow")


def test_one_owner_of_the_stream_checkpoints() -> None:
    def cron_job(*overrides: str) -> dict[str, Any]:
        text = helm_template([], list(overrides)).stdout
        return next(o for o in yaml.safe_load_all(text) if o and o["kind"] == "CronJob")

    assert cron_job("stream.runBy=airflow")["spec"]["suspend"] is True
    assert cron_job("stream.runBy=cronjob")["spec"]["suspend"] is False
    refused = helm_template([], ["airflowTasks.enabled=false", "stream.runBy=airflow"], check=False)
    assert refused.returncode != 0
    assert "stream.runBy=airflow needs airflowTasks.enabled" in refused.stderr
    for runner in ("deployment", "cronjob"):
        overrides = ["airflowTasks.enabled=false", f"stream.runBy={runner}"]
        assert helm_template([], overrides).stdout


def _task_pod(settings: dict[str, str], *, keeps_state: bool) -> dict[str, Any]:
    """The pod spec a DAG task creates (images/airflow/dags/sfmlops_orchestration/commands.py:
    the Airflow Variable's image, no service account named, no token mounted, a scratch HOME
    or, for `stream --once`, the stream job's claim, and a scratch /tmp), as the API server
    sees it after the service account admission set the account."""
    home = (
        {"name": "home", "persistentVolumeClaim": {"claimName": settings["SFMLOPS_POD_HOME_CLAIM"]}}
        if keeps_state
        else {"name": "home", "emptyDir": {"sizeLimit": "1Gi"}}
    )
    return {
        "metadata": {"name": "sfmlops-forecast-abc123", "namespace": NAMESPACE},
        "spec": {
            "serviceAccountName": "default",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "base",
                    "image": settings["AIRFLOW_VAR_SFMLOPS_IMAGE"],
                    "command": ["sfmlops"],
                }
            ],
            "volumes": [home, {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}}],
        },
    }


def _policy(rendered: Rendered) -> dict[str, Any]:
    policies = [
        p for p in rendered.of_kind("ValidatingAdmissionPolicy") if p["metadata"]["name"] == POLICY
    ]
    assert len(policies) == 1
    return policies[0]


def test_airflow_pods_are_confined_by_an_admission_policy_bound_to_this_namespace(
    rendered: Rendered,
) -> None:
    policy = _policy(rendered)
    assert policy["spec"]["failurePolicy"] == "Fail"
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["pods"],
        }
    ]
    bindings = rendered.of_kind("ValidatingAdmissionPolicyBinding")
    assert [b["spec"]["policyName"] for b in bindings] == [POLICY]
    assert bindings[0]["spec"]["validationActions"] == ["Deny"]
    assert bindings[0]["spec"]["matchResources"] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
    }


def test_the_policy_admits_the_dag_pods(rendered: Rendered) -> None:
    policy, settings = _policy(rendered), _settings(rendered)
    # The stream pod, with the chart's claim, exists only where the DAG runs the stream.
    stateful = [True] if settings["SFMLOPS_POD_HOME_CLAIM"] else []
    for account in TASKS_ACCOUNTS:
        user = f"system:serviceaccount:{AIRFLOW_NAMESPACE}:{account}"
        for keeps_state in [False, *stateful]:
            pod = _task_pod(settings, keeps_state=keeps_state)
            assert admission_refusals(policy, pod, user) == []
        # The operator patches a label onto its pod when done with it.
        assert (
            admission_refusals(policy, _task_pod(settings, keeps_state=False), user, "UPDATE") == []
        )


def _changed(pod: dict[str, Any], change: str) -> dict[str, Any]:
    spec = pod["spec"]
    if change == "image":
        spec["containers"][0]["image"] = "docker.io/library/busybox:latest"
    elif change == "init-image":
        spec["initContainers"] = [{"name": "init", "image": "docker.io/library/busybox:latest"}]
    elif change == "service-account":
        spec["serviceAccountName"] = "sfmlops-api"
    elif change == "token":
        del spec["automountServiceAccountToken"]
    elif change == "host-path":
        spec["volumes"].append({"name": "root", "hostPath": {"path": "/"}})
    elif change == "secret-volume":
        spec["volumes"].append({"name": "keys", "secret": {"secretName": "sfmlops-model-signing"}})
    elif change == "other-claim":
        spec["volumes"][0] = {
            "name": "home",
            "persistentVolumeClaim": {"claimName": "sfmlops-postgresql-data"},
        }
    return pod


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ("image", "only the sfmlops image (ghcr.io/"),
        ("init-image", "in init containers too"),
        ("service-account", "service account default, not sfmlops-api"),
        ("token", "mount no service account token"),
        ("host-path", "refused: root"),
        ("secret-volume", "refused: keys"),
        ("other-claim", "claims sfmlops-stream-home; refused: home"),
    ],
)
def test_the_policy_refuses_any_other_pod_from_airflow(
    rendered_all: dict[str, Rendered], change: str, refusal: str
) -> None:
    rendered = rendered_all["airflow-stream"]
    pod = _changed(_task_pod(_settings(rendered), keeps_state=False), change)
    user = f"system:serviceaccount:{AIRFLOW_NAMESPACE}:{TASKS_ACCOUNTS[0]}"
    for operation in ("CREATE", "UPDATE"):
        refusals = admission_refusals(_policy(rendered), pod, user, operation)
        assert refusals is not None
        assert len(refusals) == 1, refusals
        assert refusal in refusals[0]


def test_the_policy_leaves_everyone_else_alone(rendered_all: dict[str, Rendered]) -> None:
    # The chart's own controllers (Jobs, CronJobs, the Ray operator) create other pods here.
    pod = _changed(_task_pod(_settings(rendered_all["defaults"]), keeps_state=False), "image")
    for user in (
        "system:serviceaccount:kube-system:job-controller",
        f"system:serviceaccount:{AIRFLOW_NAMESPACE}:airflow-webserver",
        "admin",
    ):
        assert admission_refusals(_policy(rendered_all["defaults"]), pod, user) is None


def test_the_policy_follows_the_values(rendered_all: dict[str, Rendered]) -> None:
    # Without the stream job there is no claim to allow; an extra image is allowed by name.
    rendered = render_values(
        "no-stream-extra-image",
        [],
        ["stream.enabled=false", "airflowTasks.podPolicy.extraImages[0]=registry.example/tools:1"],
    )
    policy = _policy(rendered)
    settings = _settings(rendered_all["airflow-stream"])
    user = f"system:serviceaccount:{AIRFLOW_NAMESPACE}:{TASKS_ACCOUNTS[0]}"
    assert admission_refusals(policy, _task_pod(settings, keeps_state=False), user) == []
    refusals = admission_refusals(policy, _task_pod(settings, keeps_state=True), user)
    assert refusals is not None
    assert len(refusals) == 1
    assert "refused: home" in refusals[0]
    extra = _task_pod(settings, keeps_state=False)
    extra["spec"]["containers"][0]["image"] = "registry.example/tools:1"
    assert admission_refusals(policy, extra, user) == []
    disabled = render_values("no-pod-policy", [], ["airflowTasks.podPolicy.enabled=false"])
    assert not disabled.of_kind("ValidatingAdmissionPolicy")
    assert not disabled.of_kind("ValidatingAdmissionPolicyBinding")
