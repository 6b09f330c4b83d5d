"""sfmlops on a real Kubernetes cluster, as a user runs it: install, use, upgrade, roll back, lose
pods, uninstall. The tests run in file order on one deployment (session fixtures in conftest)."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from tests.support.deploy import CLUSTER_APIS
from tests.support.mlflow_auth import READER_ANSWERS, READER_PROBE, reader_answers

from sfmlops.datasets import ROSSMANN_DIR

# The first test's time includes the session's set-up (cluster up, images, deploy.sh up).
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1800)]

NAMESPACE = "sfmlops"
RELEASE = "sfmlops"
CLUSTER = Path(__file__).resolve().parents[2] / "scripts" / "local-cluster.sh"
# A store the bootstrap trained (it trains the first stores by id), and a day after the data.
STORE = 2
NEW_DAY = "2015-08-01"
KAFKA_NAMESPACE = "kafka"


def _ready_workloads(cluster: Any) -> bool:
    for kind in ("deployments", "statefulsets"):
        for item in cluster.json("get", kind, "-A")["items"]:
            wanted = item["spec"].get("replicas", 1)
            if item["status"].get("readyReplicas", 0) < wanted:
                return False
    clusters = cluster.json("get", "rayclusters", "-n", NAMESPACE)["items"]
    if not clusters or any(c.get("status", {}).get("state") != "ready" for c in clusters):
        return False
    jobs = cluster.json("get", "jobs", "-A")["items"]
    return all(job["status"].get("succeeded", 0) >= 1 for job in jobs)


def _secrets(cluster: Any) -> dict[str, dict[str, str]]:
    return {
        name: cluster.json("get", "secret", "-n", NAMESPACE, name)["data"]
        for name in (
            f"{RELEASE}-postgresql",
            f"{RELEASE}-api-token",
            f"{RELEASE}-mlflow-auth",
            f"{RELEASE}-mlflow-writer",
            f"{RELEASE}-mlflow-reader",
        )
    }


def _ok(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a 200; else an HTTPError naming the request, status and body."""
    if response.status_code != 200:
        raise httpx.HTTPError(
            f"{response.request.method} {response.request.url.path}:"
            f" {response.status_code} {response.text[:500]}"
        )
    return dict(response.json())


def _status(api: Any) -> dict[str, Any]:
    return _ok(api.get("/v1/status"))


def _champion(api: Any) -> str | None:
    response = api.get("/ready")
    return str(response.json().get("model_version")) if response.status_code == 200 else None


def test_every_workload_becomes_ready_and_every_job_completes(deployed: Any) -> None:
    # `deploy.sh up` waited for Deployments and StatefulSets and ran the hooks (migrations,
    # bootstrap); the RayCluster and Jobs are the operator's and the Job controller's.
    deployed.wait(lambda: _ready_workloads(deployed), 600, "every workload Ready, every Job done")
    deployed.timeline.mark("every workload Ready")
    # The hooks succeeded and were deleted; nothing failed behind them.
    assert not deployed.json(
        "get", "jobs", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=migrations"
    )["items"]
    notes = deployed.helm("get", "notes", RELEASE, "-n", NAMESPACE)
    assert "/api/ready" in notes
    assert f"port-forward svc/{RELEASE}-api" in notes


def _samples(metrics: str, name: str) -> list[float]:
    """The values of metric `name` in a Prometheus text exposition."""
    return [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith((f"{name} ", f"{name}{{"))
    ]


def test_the_producer_s_live_day_reaches_postgresql_through_kafka_and_the_stream(
    deployed: Any, api: Any
) -> None:
    # The producer hook sent the live day (values-local.yaml: every store's latest record
    # re-dated to the day after the bundled data) before `deploy.sh up` returned; the continuous
    # stream job (Spark, micro-batches every 2 s) writes it within seconds of its start.
    stores = _status(api)["stores"]
    assert stores > 1000
    bundled = pd.read_csv(ROSSMANN_DIR / "train.csv.gz", usecols=["Date"])["Date"].max()
    live_day = (pd.Timestamp(bundled) + pd.Timedelta(days=1)).date().isoformat()
    assert live_day < NEW_DAY

    def landed() -> bool:
        day = _as_superuser(deployed, f"SELECT count(*) FROM sales WHERE sales_date = '{live_day}'")
        return day == [str(stores)]

    stream = f"{RELEASE}-stream"
    deployed.wait(
        landed,
        300,
        f"{stores} sales of {live_day} through Kafka and the stream job",
        logs_of=(f"deploy/{stream}",),
    )
    deployed.timeline.mark("the live day landed through Kafka")
    assert _status(api)["latest_sales_date"] == live_day
    assert _as_superuser(deployed, "SELECT count(*) FROM ingest_dead_letters") == ["0"]

    # The stream job's metrics, as its PodMonitor has Prometheus read them: every record
    # received, and nothing left behind in Kafka once the batch's lag was measured.
    monitor = deployed.json("get", "podmonitor", "-n", NAMESPACE, stream)
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"

    def caught_up() -> str | None:
        metrics = _forwarded_get(deployed, f"deploy/{stream}", 9400, "/metrics").text
        lags = _samples(metrics, "sfmlops_stream_lag_records")
        return metrics if lags and not any(lags) else None

    metrics = deployed.wait(
        caught_up, 120, "the stream job's lag at 0 on /metrics", logs_of=(f"deploy/{stream}",)
    )
    assert sum(_samples(metrics, "sfmlops_stream_records_total")) >= stores


def _oom_killed(cluster: Any) -> list[str]:
    """Containers of the release whose last run ended OOMKilled (a limit set too low)."""
    killed = []
    for pod in cluster.json("get", "pods", "-n", NAMESPACE)["items"]:
        for container in pod["status"].get("containerStatuses", []):
            ended = container.get("lastState", {}).get("terminated", {})
            if ended.get("reason") == "OOMKilled":
                killed.append(f"{pod['metadata']['name']}/{container['name']}")
    return killed


def test_no_container_ran_out_of_memory(deployed: Any) -> None:
    # MLflow was OOMKilled at values-local.yaml's former 1 GiB limit, over and over.
    assert not _oom_killed(deployed)


def _cluster_processes() -> dict[str, str]:
    """name -> PID of each process `scripts/local-cluster.sh status` reports running."""
    lines = subprocess.run(
        [str(CLUSTER), "status"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    return {
        line.split()[0]: line.split("pid ")[1].rstrip(")")
        for line in lines
        if " running (pid " in line
    }


def test_a_second_up_leaves_the_running_cluster_alone(deployed: Any) -> None:
    # `up` on a running cluster used to rewrite kube-proxy's configuration file, on which
    # kube-proxy exits: Services stopped working until the next `up`.
    before = _cluster_processes()
    result = subprocess.run(
        [str(CLUSTER), "up"], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    time.sleep(5)  # kube-proxy noticed a changed file within a second
    assert _cluster_processes() == before
    assert "kube-proxy" in before


def test_the_dashboard_and_the_api_answer_through_the_ingress(deployed: Any, api: Any) -> None:
    page = api.client.get("/")
    assert page.status_code == 200
    assert "<title>" in page.text.lower() or "streamlit" in page.text.lower()
    ready = deployed.wait(lambda: api.get("/ready").status_code == 200, 300, "/api/ready 200")
    assert ready
    forecast = api.get(f"/v1/stores/{STORE}/forecast")
    assert forecast.status_code == 200, forecast.text
    deployed.timeline.mark("first forecast through the ingress")


def _forwarded_get(deployed: Any, target: str, port: int, path: str) -> httpx.Response:
    """GET `path` of `target` (svc/NAME, deploy/NAME) through a port-forward on 127.0.0.1."""
    with subprocess.Popen(
        ["kubectl", "-n", NAMESPACE, "port-forward", target, f":{port}"],
        env=deployed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as forward:
        try:
            assert forward.stdout is not None
            line = forward.stdout.readline()  # "Forwarding from 127.0.0.1:LOCAL -> PORT"
            local = line.split("127.0.0.1:")[1].split()[0]
            response = httpx.get(f"http://127.0.0.1:{local}{path}", timeout=30)
            response.raise_for_status()
            return response
        finally:
            forward.terminate()


def _ray_job(deployed: Any, submission_id: str) -> dict[str, Any]:
    """The Ray job's record from the head's job API."""
    response = _forwarded_get(
        deployed, f"svc/{RELEASE}-ray-head-svc", 8265, f"/api/jobs/{submission_id}"
    )
    return dict(response.json())


def test_a_single_store_retrain_runs_on_the_ray_worker_and_becomes_champion(
    deployed: Any, api: Any
) -> None:
    before = _champion(api)
    submitted = api.post("/v1/training-jobs", {"stores": [STORE]})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert submitted.json()["runner"] == "ray-jobs"

    def finished() -> dict[str, Any] | None:
        job = _ok(api.get(f"/v1/training-jobs/{job_id}"))
        return job if job["status"] in ("succeeded", "failed") else None

    job = deployed.wait(finished, 600, f"training job {job_id}", logs_of=(f"deploy/{RELEASE}-api",))
    assert job["status"] == "succeeded", job
    deployed.timeline.mark("single-store retrain done")

    # The job reports its outcome into PostgreSQL before its process exits: Ray calls it
    # SUCCEEDED a moment later.
    def ray_job_ended() -> dict[str, Any] | None:
        ray_job = _ray_job(deployed, job["runner_job_id"])
        return ray_job if ray_job["status"] in ("SUCCEEDED", "FAILED", "STOPPED") else None

    ray_job = deployed.wait(ray_job_ended, 120, "the Ray job's end")
    assert ray_job["status"] == "SUCCEEDED", ray_job
    workers = deployed.json("get", "pods", "-n", NAMESPACE, "-l", "ray.io/node-type=worker")[
        "items"
    ]
    # The entrypoint's process runs under the job agent of the node Ray placed the driver on
    # (driver_info stays empty for a submitted entrypoint): a worker pod, not the head.
    driver_node = httpx.URL(ray_job["driver_agent_http_address"]).host
    assert driver_node in {p["status"]["podIP"] for p in workers}, ray_job
    version = job["model_version"]
    assert version
    assert version != before
    deployed.wait(lambda: _champion(api) == version, 300, f"the API serving version {version}")
    assert api.get(f"/v1/stores/{STORE}/forecast").status_code == 200


def test_the_namespace_admits_only_pods_of_the_restricted_profile(deployed: Any) -> None:
    # deploy.sh labelled the namespace before anything was installed: every pod now running,
    # KubeRay's head and worker among them, was admitted under "restricted".
    labels = deployed.json("get", "namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = deployed.json("get", "pods", "-n", NAMESPACE)["items"]
    ray_nodes = {p["metadata"]["labels"].get("ray.io/node-type") for p in pods}
    assert {"head", "worker"} <= ray_nodes
    # And a pod beyond it is refused (asked with a server-side dry run: nothing is created).
    refused = deployed.run(
        ["kubectl", "run", "beyond-restricted", "-n", NAMESPACE, "--dry-run=server",
         "--image", "localhost/sfmlops-forecast-api:unused", "--restart", "Never"],
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr, refused.stderr
    # Kafka's namespace too (scripts/deploy.sh's local mode), its broker admitted under it.
    kafka = deployed.json("get", "namespace", KAFKA_NAMESPACE)["metadata"]["labels"]
    assert kafka["pod-security.kubernetes.io/enforce"] == "restricted"
    broker = deployed.json("get", "pod", "-n", KAFKA_NAMESPACE, "kafka-0")
    assert broker["status"]["phase"] == "Running"


# Airflow's scheduler, as the chart's RoleBinding names it (values-airflow.yaml pins the name).
AIRFLOW_TASKS_USER = "system:serviceaccount:airflow:airflow-scheduler"


def _airflow_task_pod(image: str) -> dict[str, Any]:
    """A command pod as Airflow's DAGs build it (images/airflow/dags/sfmlops_orchestration/
    commands.py): the sfmlops image, the namespace's default account without a token, scratch
    volumes, the restricted profile's contexts."""
    seccomp = {"type": "RuntimeDefault"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sfmlops-forecast-probe", "namespace": NAMESPACE},
        "spec": {
            "serviceAccountName": "default",
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                "fsGroup": 10001, "seccompProfile": seccomp,
            },
            "containers": [{
                "name": "base", "image": image, "command": ["sfmlops"], "args": ["status"],
                "securityContext": {
                    "allowPrivilegeEscalation": False, "privileged": False,
                    "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]}, "seccompProfile": seccomp,
                },
                "volumeMounts": [
                    {"name": "home", "mountPath": "/var/lib/sfmlops"},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }],
            "volumes": [
                {"name": "home", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}},
            ],
        },
    }  # fmt: skip


def test_airflow_s_account_may_create_the_task_pods_and_nothing_else(
    deployed: Any, tmp_path: Path
) -> None:
    # No Airflow runs here (values-local.yaml leaves its objects out): the chart's Role,
    # RoleBinding and admission policy for Airflow's task pods, rendered with this release's
    # values, are applied for this test, and the API server itself judges pods created as
    # Airflow's service account (impersonated, server-side dry runs: nothing is created).
    values = tmp_path / "values.yaml"
    values.write_text(deployed.helm("get", "values", RELEASE, "-n", NAMESPACE, "-o", "yaml"))
    rendered = deployed.helm(
        "template", RELEASE, "./sfmlops-helm", "-n", NAMESPACE, "-f", str(values),
        "--set", "airflowTasks.enabled=true", "--show-only", "templates/airflow-tasks.yaml",
        *(argument for api in CLUSTER_APIS for argument in ("--api-versions", api)),
    )  # fmt: skip
    objects = [item for item in yaml.safe_load_all(rendered) if item]
    (settings,) = (item["data"] for item in objects if item["kind"] == "ConfigMap")
    applied = [item for item in objects if item["kind"] != "ConfigMap"]  # Airflow's namespace
    assert {item["kind"] for item in applied} == {
        "Role", "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    }  # fmt: skip
    manifest = tmp_path / "airflow-tasks.yaml"
    manifest.write_text(yaml.safe_dump_all(applied))
    image = settings["AIRFLOW_VAR_SFMLOPS_IMAGE"]

    def create(pod: dict[str, Any], *, as_airflow: bool = True) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "pod.yaml"
        path.write_text(yaml.safe_dump(pod))
        user = ["--as", AIRFLOW_TASKS_USER] if as_airflow else []
        return deployed.run(
            ["kubectl", "create", "--dry-run=server", "-f", str(path), *user], check=False
        )

    other_image = _airflow_task_pod("localhost/sfmlops-forecast-api:unused")
    secret_volume = _airflow_task_pod(image)
    secret_volume["spec"]["volumes"].append(
        {"name": "keys", "secret": {"secretName": f"{RELEASE}-api-token"}}
    )
    other_account = _airflow_task_pod(image)
    other_account["spec"]["serviceAccountName"] = f"{RELEASE}-mlflow"
    deployed.kubectl("apply", "-f", str(manifest))
    try:
        # The API server compiles a new policy in the background: refusals start within seconds.
        refused_image = deployed.wait(
            lambda: (
                "run only the sfmlops image" in (result := create(other_image)).stderr and result
            ),
            60,
            "the admission policy in force",
        )
        admitted = create(_airflow_task_pod(image))
        refused_volume = create(secret_volume)
        refused_account = create(other_account)
        # Anyone else (here the cluster's admin) is left to RBAC and Pod Security alone.
        admin = create(other_image, as_airflow=False)
    finally:
        deployed.kubectl("delete", "-f", str(manifest), "--ignore-not-found")

    assert admitted.returncode == 0, admitted.stderr
    assert "Airflow task pods run only the sfmlops image" in refused_image.stderr
    assert refused_volume.returncode != 0
    assert "refused: keys" in refused_volume.stderr, refused_volume.stderr
    assert refused_account.returncode != 0
    assert f"run as the service account default, not {RELEASE}-mlflow" in refused_account.stderr
    assert admin.returncode == 0, admin.stderr


def test_a_sales_batch_through_the_api_shows_in_the_status(api: Any) -> None:
    before = _status(api)
    record = {
        "store_id": STORE,
        "sales_date": NEW_DAY,
        "sales": 5100,
        "customers": 530,
        "open": 1,
        "promo": 0,
        "state_holiday": "0",
        "school_holiday": 0,
    }
    response = api.post("/v1/sales", {"records": [record]})
    assert response.status_code == 200, response.text
    after = _status(api)
    assert after["sales_rows"] == before["sales_rows"] + 1
    assert after["latest_sales_date"] == NEW_DAY
    assert after["sales_ingested_last_day"] >= 1


# Run in the API's pod: who its read URL logs in as, and the SQLSTATE a write through it gets.
READ_ROLE_PROBE = """
import os, sqlalchemy
engine = sqlalchemy.create_engine(os.environ["SFMLOPS_DATABASE_READ_URL"])
with engine.connect() as connection:
    print(connection.exec_driver_sql("SELECT current_user").scalar())
    try:
        connection.exec_driver_sql("DELETE FROM audit_events")
    except sqlalchemy.exc.DBAPIError as error:
        print(error.orig.pgcode)
"""


def _as_superuser(cluster: Any, query: str) -> list[str]:
    """Rows of `query` on the sales database, run by the database-roles container (the one
    client that holds the superuser's password)."""
    out = cluster.kubectl(
        "exec", "-n", NAMESPACE, f"{RELEASE}-postgresql-0", "-c", "database-roles", "--",
        "psql", "--no-psqlrc", "--tuples-only", "--no-align", "-c", query,
    )  # fmt: skip
    return out.split()


def test_the_sales_programs_log_in_as_the_application_role(deployed: Any) -> None:
    # After the sales batch the API holds pooled connections to the sales database: its writes
    # as the application role, its reads (and its champion poller's) as the read-only role,
    # whose password no other program holds (tests/deploy/test_database_roles.py).
    users = _as_superuser(
        deployed,
        "SELECT DISTINCT usename FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY usename",
    )
    assert users == ["sfmlops_app", "sfmlops_reader"]
    # The API's read URL may not write: PostgreSQL refuses it in the pod itself.
    refusal = deployed.kubectl(
        "exec", "-n", NAMESPACE, f"deployment/{RELEASE}-api", "-c", "api", "--",
        "python", "-c", READ_ROLE_PROBE,
    )  # fmt: skip
    assert refusal.split() == ["sfmlops_reader", "25006"], refusal
    attributes = _as_superuser(
        deployed,
        "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = 'sfmlops_app'",
    )
    assert attributes == ["f|f|f"]
    owners = _as_superuser(
        deployed,
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
    )
    assert owners == ["sfmlops_app"]
    # The reader reads every table, the migrations' included (they run while the database-roles
    # container still works on a fresh server).
    unreadable = _as_superuser(
        deployed,
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
        " AND NOT has_table_privilege('sfmlops_reader', c.oid, 'SELECT')",
    )
    assert unreadable == []
    # Nor may a role reach a database not its own, the maintenance database included.
    open_to_all = _as_superuser(
        deployed,
        "SELECT datname FROM pg_database WHERE datallowconn"
        " AND has_database_privilege('public', oid, 'CONNECT')",
    )
    assert open_to_all == []


def test_mlflow_requires_credentials_and_the_api_may_only_read(deployed: Any) -> None:
    # The bootstrap Job and the retrain on Ray (the writer) registered versions by now; the API
    # holds the reader's credentials and nothing else.
    out = deployed.kubectl(
        "exec", "-n", NAMESPACE, f"deployment/{RELEASE}-api", "-c", "api", "--",
        "python", "-c", READER_PROBE,
    )  # fmt: skip
    assert reader_answers(out) == READER_ANSWERS


def test_an_upgrade_keeps_data_secrets_and_model(deployed: Any, api: Any) -> None:
    secrets, status, champion = _secrets(deployed), _status(api), _champion(api)
    deployed.helm(
        "upgrade", RELEASE, "./sfmlops-helm", "-n", NAMESPACE, "--reuse-values",
        "--set", "dashboard.resources.limits.memory=800Mi", "--wait", "--timeout", "10m",
    )  # fmt: skip
    dashboard = deployed.json("get", "deployment", "-n", NAMESPACE, f"{RELEASE}-dashboard")
    limits = dashboard["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"] == "800Mi"
    assert _secrets(deployed) == secrets
    assert _status(api)["sales_rows"] == status["sales_rows"]
    assert _status(api)["latest_sales_date"] == NEW_DAY
    deployed.wait(lambda: _champion(api) == champion, 300, "the same champion after the upgrade")


def test_a_rollback_restores_the_previous_revision(deployed: Any, api: Any) -> None:
    revision = int(
        deployed.json("get", "secret", "-n", NAMESPACE, "-l", f"owner=helm,name={RELEASE}")[
            "items"
        ][-1]["metadata"]["labels"]["version"]
    )
    deployed.helm(
        "rollback", RELEASE, str(revision - 1), "-n", NAMESPACE, "--wait", "--timeout", "10m"
    )
    dashboard = deployed.json("get", "deployment", "-n", NAMESPACE, f"{RELEASE}-dashboard")
    limits = dashboard["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"] != "800Mi"
    history = deployed.helm("history", RELEASE, "-n", NAMESPACE, "-o", "json")
    assert '"Rollback to' in history
    deployed.wait(lambda: api.get("/ready").status_code == 200, 300, "/api/ready after rollback")


def test_a_backup_job_dumps_each_database_as_its_owner(deployed: Any) -> None:
    # The CronJob turned on in the running release (without --wait: its claim binds when the
    # first backup pod mounts it; nor hooks: nothing else changes), then run once now.
    deployed.helm(
        "upgrade", RELEASE, "./sfmlops-helm", "-n", NAMESPACE, "--reuse-values", "--no-hooks",
        "--set", "backup.enabled=true",
    )  # fmt: skip
    job = "backup-now"
    deployed.kubectl("create", "job", job, "-n", NAMESPACE, f"--from=cronjob/{RELEASE}-backup")
    deployed.kubectl(
        "wait", "-n", NAMESPACE, f"job/{job}", "--for=condition=Complete", "--timeout=180s",
        timeout=200,
    )  # fmt: skip
    # Each line is printed once the dump was complete and renamed in the volume.
    logs = deployed.kubectl("logs", "-n", NAMESPACE, f"job/{job}")
    dumped = sorted(line.split()[2] for line in logs.splitlines() if line.startswith("backed up"))
    assert dumped == ["airflow", "mlflow", "sfmlops"], logs
    deployed.kubectl("delete", "job", job, "-n", NAMESPACE, "--wait=true")


def _replace_pod(deployed: Any, selector: str) -> None:
    old = {
        p["metadata"]["uid"]
        for p in deployed.json("get", "pods", "-n", NAMESPACE, "-l", selector)["items"]
    }
    deployed.kubectl("delete", "pod", "-n", NAMESPACE, "-l", selector, "--wait=true")

    def replaced() -> bool:
        pods = deployed.json("get", "pods", "-n", NAMESPACE, "-l", selector)["items"]
        return bool(pods) and all(
            p["metadata"]["uid"] not in old
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
            for p in pods
        )

    deployed.wait(replaced, 300, f"a new Ready pod for {selector}")


def test_losing_the_api_and_database_pods_loses_nothing(deployed: Any, api: Any) -> None:
    status, champion = _status(api), _champion(api)
    _replace_pod(deployed, f"app.kubernetes.io/name=api,app.kubernetes.io/instance={RELEASE}")
    deployed.wait(lambda: _champion(api) == champion, 300, "the champion served by the new API pod")
    _replace_pod(
        deployed, f"app.kubernetes.io/name=postgresql,app.kubernetes.io/instance={RELEASE}"
    )

    def same_data() -> bool:
        now = _status(api)
        return now["sales_rows"] == status["sales_rows"] and now["latest_sales_date"] == NEW_DAY

    deployed.wait(same_data, 300, "the same sales after PostgreSQL's pod was replaced")
    assert api.get(f"/v1/stores/{STORE}/forecast").status_code == 200


def test_deploy_down_removes_the_release(deployed: Any) -> None:
    deployed.deploy("down", ("SFMLOPS_RELEASES", "local"))
    assert deployed.helm("list", "-n", NAMESPACE, "-q").strip() == ""
    deployed.wait(
        lambda: (
            not deployed.json(
                "get", "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}"
            )["items"]
        ),
        300,
        "every pod of the release gone",
    )
    # Kept on purpose (helm.sh/resource-policy: keep): the Secrets, so a reinstall finds the data.
    token = deployed.json("get", "secret", "-n", NAMESPACE, f"{RELEASE}-api-token")
    assert base64.b64decode(token["data"]["token"])
