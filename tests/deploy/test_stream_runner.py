"""Who runs the stream job in the chart (stream.runBy), exactly one runner per mode, and the
continuous mode's metrics reaching kube-prometheus-stack."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.deploy import (
    CHART,
    ENDPOINTS,
    NAMESPACE,
    RELEASES,
    Rendered,
    admission_refusals,
    admitted,
    labels_of,
    load_yaml,
    pod_specs,
    render_values,
)

CHART_VALUES = load_yaml(CHART / "values.yaml")
STREAM = "sfmlops-stream"
CLAIM = "sfmlops-stream-home"
AIRFLOW_NAMESPACE = RELEASES["AIRFLOW_NAMESPACE"]
TASKS = CHART_VALUES["airflowTasks"]["configMapName"]
MONITORING_NAMESPACE = CHART_VALUES["clientNamespaces"]["monitoring"]


def _container(item: dict[str, Any]) -> dict[str, Any]:
    (container,) = next(pod_specs(item))[1]["containers"]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _runners(rendered: Rendered) -> list[str]:
    """Everything that would run a Spark query on the stream job's checkpoint."""
    runners = []
    if rendered.get("Deployment", STREAM) is not None:
        runners.append("deployment")
    cron_job = rendered.get("CronJob", STREAM)
    if cron_job is not None and not cron_job["spec"].get("suspend", False):
        runners.append("cronjob")
    tasks = rendered.get("ConfigMap", TASKS, AIRFLOW_NAMESPACE)
    if tasks is not None and tasks["data"]["SFMLOPS_DAILY_STREAM_TASK"] == "true":
        runners.append("airflow")
    return runners


def test_the_local_install_runs_the_continuous_job_with_its_pod_monitor(
    rendered_all: dict[str, Rendered],
) -> None:
    # As scripts/deploy.sh's local mode installs it with its Kafka pod (the cluster tier reads
    # its /metrics there).
    rendered = rendered_all["local"]
    assert _runners(rendered) == ["deployment"]
    monitor = rendered.get("PodMonitor", STREAM)
    assert monitor is not None
    deployment = rendered.get("Deployment", STREAM)
    assert deployment is not None
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.fixture(scope="module")
def by_mode() -> dict[str, Rendered]:
    """The chart with its defaults and with each stream.runBy."""
    return {
        mode: render_values(f"stream-{mode}", [], [f"stream.runBy={mode}"])
        for mode in ("deployment", "cronjob", "airflow")
    }


def test_the_default_is_one_continuous_pod_that_serves_its_metrics(
    rendered_all: dict[str, Rendered],
) -> None:
    rendered = rendered_all["defaults"]
    assert CHART_VALUES["stream"]["runBy"] == "deployment"
    deployment = rendered.get("Deployment", STREAM)
    assert deployment is not None
    spec = deployment["spec"]
    # Never two pods on one checkpoint, not even during an upgrade.
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    container = _container(deployment)
    assert container["args"][:2] == ["stream", "--continuous"]
    # It waits for PostgreSQL and its login at start instead of crash-looping under back-off,
    # within what its startup probe allows.
    wait = container["args"][container["args"].index("--wait") + 1]
    startup = container["startupProbe"]
    assert 0 < int(wait) < startup["periodSeconds"] * startup["failureThreshold"]
    port = CHART_VALUES["stream"]["metrics"]["port"]
    assert _env(container)["SFMLOPS_STREAM_METRICS_PORT"] == str(port)
    assert {"name": "metrics", "containerPort": port} in container["ports"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    # Spark's checkpoints on the chart's claim, mounted as SFMLOPS_HOME, as the CronJob does.
    pod = spec["template"]["spec"]
    home = rendered.get("ConfigMap", ENDPOINTS)["data"]["SFMLOPS_HOME"]  # type: ignore[index]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == home)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == CLAIM
    # The batch being written commits after SIGTERM before the pod is killed.
    assert pod["terminationGracePeriodSeconds"] >= 60
    assert rendered.get("CronJob", STREAM) is None


def test_kube_prometheus_stack_scrapes_the_continuous_stream_job(
    rendered_all: dict[str, Rendered],
) -> None:
    rendered = rendered_all["defaults"]
    monitor = rendered.get("PodMonitor", STREAM)
    assert monitor is not None
    # Selected by kube-prometheus-stack as the API's ServiceMonitor is.
    selector_labels = CHART_VALUES["monitoring"]["selectorLabels"]
    assert selector_labels.items() <= monitor["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    pod_labels = labels_of(rendered, "Deployment", STREAM)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # It selects the stream pod only: no other workload of the release carries those labels.
    for item in rendered.objects:
        name = item["metadata"]["name"]
        if item["kind"] in {"Deployment", "StatefulSet", "Job", "CronJob"} and name != STREAM:
            other = labels_of(rendered, item["kind"], name)
            assert not monitor["spec"]["selector"]["matchLabels"].items() <= other.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    # Prometheus (in the monitoring namespace) may reach that port through the default deny.
    assert admitted(rendered, pod_labels, None, MONITORING_NAMESPACE)
    policy = rendered.get("NetworkPolicy", STREAM)
    assert policy is not None
    assert policy["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}
                    }
                }
            ],
            "ports": [{"port": "metrics"}],
        }
    ]


@pytest.mark.parametrize("mode", ["deployment", "cronjob", "airflow"])
def test_exactly_one_stream_runner_per_mode(by_mode: dict[str, Rendered], mode: str) -> None:
    rendered = by_mode[mode]
    assert _runners(rendered) == [mode]
    if mode == "cronjob":
        cron_job = rendered.get("CronJob", STREAM)
        assert cron_job is not None
        assert "--wait" in _container(cron_job)["args"]
    # Metrics are scraped only from the long-running pod: a `--once` run ends before a scrape.
    assert (rendered.get("PodMonitor", STREAM) is not None) == (mode == "deployment")
    assert (rendered.get("NetworkPolicy", STREAM) is not None) == (mode == "deployment")
    tasks = rendered.get("ConfigMap", TASKS, AIRFLOW_NAMESPACE)
    assert tasks is not None
    # Airflow's pods get the checkpoint claim only when the DAG runs the stream.
    assert tasks["data"]["SFMLOPS_POD_HOME_CLAIM"] == (CLAIM if mode == "airflow" else "")


def test_airflow_cannot_mount_the_claim_another_runner_holds(
    by_mode: dict[str, Rendered],
) -> None:
    # The DAG's `stream --once` pod as the airflow mode has it (test_airflow_tasks: _task_pod).
    tasks = by_mode["airflow"].get("ConfigMap", TASKS, AIRFLOW_NAMESPACE)
    assert tasks is not None
    pod = {
        "metadata": {"name": "sfmlops-stream-once-abc123", "namespace": NAMESPACE},
        "spec": {
            "serviceAccountName": CHART_VALUES["airflowTasks"]["podPolicy"]["serviceAccount"],
            "automountServiceAccountToken": False,
            "containers": [{"name": "base", "image": tasks["data"]["AIRFLOW_VAR_SFMLOPS_IMAGE"]}],
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": CLAIM}}],
        },
    }
    account = CHART_VALUES["airflowTasks"]["serviceAccounts"][0]
    user = f"system:serviceaccount:{AIRFLOW_NAMESPACE}:{account}"

    def refusals(mode: str) -> list[str] | None:
        rendered = by_mode[mode]
        (policy,) = rendered.of_kind("ValidatingAdmissionPolicy")
        return admission_refusals(policy, pod, user)

    assert refusals("airflow") == []
    for mode in ("deployment", "cronjob"):
        refused = refusals(mode)
        assert refused is not None
        assert len(refused) == 1
        assert "refused: home" in refused[0]


def test_kafka_users_reach_the_continuous_stream_job() -> None:
    rendered = render_values("stream-kafka-auth", [], ["kafkaAuth.enabled=true"])
    deployment = rendered.get("Deployment", STREAM)
    assert deployment is not None
    env = {e["name"]: e for e in _container(deployment)["env"]}
    assert env["SFMLOPS_KAFKA_USERNAME"]["value"] == CHART_VALUES["kafkaAuth"]["stream"]["username"]
    secret = env["SFMLOPS_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert secret == {
        "name": CHART_VALUES["kafkaAuth"]["existingSecret"],
        "key": CHART_VALUES["kafkaAuth"]["stream"]["secretKey"],
    }
