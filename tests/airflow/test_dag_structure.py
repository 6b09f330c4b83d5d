"""The DAG folder parses cleanly, offline, and the DAGs are built as specified."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dag_support import DAGS, HERE, PYTHON, airflow_environment

DAILY = "sfmlops_daily_ingest"
WEEKLY = "sfmlops_weekly_train_forecast"


def parse_offline(folder: Path, tmp_path: Path, **environment: str) -> dict[str, Any]:
    """Parse `folder` in a new process with sockets and the metadata database refused."""
    # A database Airflow cannot open: any parse-time query would fail the import.
    env = airflow_environment(tmp_path, database="sqlite:////nonexistent/airflow.db")
    done = subprocess.run(
        [PYTHON, str(HERE / "parse_dags.py"), str(folder)],
        env=env | environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def airflow_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Airflow reads its home at import: set before the first import in this process.
    saved = dict(os.environ)
    os.environ.update(airflow_environment(tmp_path_factory.mktemp("parse-home")))
    yield
    os.environ.clear()
    os.environ.update(saved)


def load(**environment: str) -> Any:
    from airflow.dag_processing.dagbag import BundleDagBag  # noqa: PLC0415

    saved = dict(os.environ)
    os.environ.update(environment)
    try:
        bag = BundleDagBag(dag_folder=DAGS, bundle_path=DAGS, bundle_name="dags-folder")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return bag


def test_the_dag_folder_parses_offline_without_errors(tmp_path: Path) -> None:
    parsed = parse_offline(DAGS, tmp_path)

    assert parsed["import_errors"] == {}
    assert parsed["dags"] == [DAILY, WEEKLY]
    assert parsed["attempts"] == []
    assert "commands.py" not in parsed["files"]  # helpers are not parsed as DAG files


def test_the_offline_parse_catches_parse_time_network_access(tmp_path: Path) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "chatty_dag.py").write_text(
        "import socket\nfrom airflow.sdk import dag\n"
        "socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
        "@dag(schedule=None)\ndef chatty():\n    pass\nchatty()\n"
    )

    parsed = parse_offline(tmp_path / "dags", tmp_path)

    assert parsed["dags"] == []
    assert "create_connection at parse time is not allowed" in str(parsed["import_errors"])


def test_the_kubernetes_runner_parses_offline_into_pods(tmp_path: Path) -> None:
    parsed = parse_offline(DAGS, tmp_path, SFMLOPS_COMMAND_RUNNER="kubernetes")

    assert parsed["import_errors"] == {}
    assert parsed["dags"] == [DAILY, WEEKLY]
    assert parsed["attempts"] == []


# What sfmlops-helm renders into the ConfigMap sfmlops-airflow-tasks (tests/deploy checks it).
CHART_POD_SETTINGS = {
    "SFMLOPS_COMMAND_RUNNER": "kubernetes",
    "SFMLOPS_POD_HOME_CLAIM": "sfmlops-stream-home",
    "SFMLOPS_POD_LABELS": '{"app.kubernetes.io/instance": "prod", "app.kubernetes.io/name": "airflow-task"}',
    "SFMLOPS_POD_RESOURCES": '{"limits": {"cpu": "3", "memory": "6Gi"}, "requests": {"cpu": "1", "memory": "2Gi"}}',
}


@pytest.mark.usefixtures("airflow_settings")
def test_command_pods_are_hardened_and_take_the_chart_settings() -> None:
    stream = load(**CHART_POD_SETTINGS).dags[DAILY].get_task("stream_once")
    default = load(SFMLOPS_COMMAND_RUNNER="kubernetes").dags[WEEKLY].get_task("write_forecasts")

    assert stream.labels["app.kubernetes.io/name"] == "airflow-task"
    assert stream.labels["app.kubernetes.io/instance"] == "prod"
    # The checkpoints of `stream --once` live on the chart's volume, mounted as SFMLOPS_HOME.
    volumes = {volume.name: volume for volume in stream.volumes}
    assert volumes["home"].persistent_volume_claim.claim_name == "sfmlops-stream-home"
    mounts = {mount.mount_path: mount.name for mount in stream.volume_mounts}
    assert mounts == {"/var/lib/sfmlops": "home", "/tmp": "tmp"}
    assert stream.container_resources.requests == {"cpu": "1", "memory": "2Gi"}
    assert stream.container_resources.limits == {"cpu": "3", "memory": "6Gi"}
    pod, container = stream.security_context, stream.container_security_context
    assert pod.run_as_non_root is True
    assert pod.run_as_user == 10001
    assert pod.seccomp_profile.type == "RuntimeDefault"
    assert container.allow_privilege_escalation is False
    assert container.privileged is False
    assert container.read_only_root_filesystem is True
    assert container.capabilities.drop == ["ALL"]
    assert stream.automount_service_account_token is False
    assert stream.startup_timeout_seconds >= 600  # a first pull of the image takes minutes
    # Only the stream keeps state: other commands never hold the stream's volume.
    check = load(**CHART_POD_SETTINGS).dags[DAILY].get_task("check_ingest")
    assert {volume.name: volume for volume in check.volumes}["home"].empty_dir is not None
    # Without the chart's settings: a scratch home and the defaults the chart also uses.
    assert {volume.name: volume for volume in default.volumes}["home"].empty_dir is not None
    assert default.labels == {
        "app.kubernetes.io/name": "airflow-task",
        "app.kubernetes.io/instance": "sfmlops",
    }
    assert default.container_resources.limits == {"cpu": "2", "memory": "4Gi"}


@pytest.mark.usefixtures("airflow_settings")
@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SFMLOPS_POD_RESOURCES", '{"requests": {"cpu": "1"}}', "requests and limits of cpu"),
        ("SFMLOPS_POD_RESOURCES", "2 cpus", "must be a JSON object"),
        ("SFMLOPS_POD_LABELS", '{"app": ""}', "non-empty strings"),
        ("SFMLOPS_POD_LABELS", '["app"]', "must be a JSON object"),
        ("SFMLOPS_POD_SIGNING_SECRET", "sfmlops-model-signing", "must be name:key"),
    ],
)
def test_bad_pod_settings_are_import_errors(variable: str, value: str, message: str) -> None:
    bad = load(SFMLOPS_COMMAND_RUNNER="kubernetes", **{variable: value})

    assert bad.dags == {}
    assert len(bad.import_errors) == 2
    assert all(variable in error and message in error for error in bad.import_errors.values())


@pytest.mark.usefixtures("airflow_settings")
def test_schedules_catchup_tags_and_docs() -> None:
    bag = load()
    daily, weekly = bag.dags[DAILY], bag.dags[WEEKLY]

    assert daily.timetable.expression == "0 0 * * *"
    assert weekly.timetable.expression == "0 0 * * 0"
    for dag in (daily, weekly):
        assert dag.catchup is False
        assert dag.max_active_runs == 1
        assert "sfmlops" in dag.tags
        assert dag.doc_md.strip().startswith("# sfmlops")
        assert all(task.doc_md for task in dag.tasks)


@pytest.mark.usefixtures("airflow_settings")
def test_task_order() -> None:
    bag = load()

    def edges(dag: Any) -> set[tuple[str, str]]:
        return {(t.task_id, down) for t in dag.tasks for down in t.downstream_task_ids}

    assert edges(bag.dags[DAILY]) == {
        ("stream_once", "check_ingest"),
        ("check_ingest", "score_forecasts"),
        ("score_forecasts", "retrain_stale_stores"),
    }
    assert edges(bag.dags[WEEKLY]) == {
        ("submit_training_job", "wait_for_training_job"),
        ("submit_training_job", "check_champion"),  # it reads the champion noted before
        ("wait_for_training_job", "check_champion"),
        ("check_champion", "write_forecasts"),
        ("write_forecasts", "verify_forecasts"),
    }


@pytest.mark.usefixtures("airflow_settings")
def test_the_daily_dag_leaves_the_stream_to_another_runner_when_told() -> None:
    # The chart's continuous stream Deployment (or its CronJob) owns the checkpoint: a second
    # Spark query from the DAG would race it (tests/deploy/test_stream_runner.py).
    without = load(SFMLOPS_DAILY_STREAM_TASK="false").dags[DAILY]
    bad = load(SFMLOPS_DAILY_STREAM_TASK="sometimes")

    assert "stream_once" not in without.task_ids
    assert {(t.task_id, down) for t in without.tasks for down in t.downstream_task_ids} == {
        ("check_ingest", "score_forecasts"),
        ("score_forecasts", "retrain_stale_stores"),
    }
    assert without.get_task("check_ingest").upstream_task_ids == set()
    assert "stream_once" in load(SFMLOPS_DAILY_STREAM_TASK="true").dags[DAILY].task_ids
    assert bad.dags == {}
    assert all(
        "SFMLOPS_DAILY_STREAM_TASK must be true or false, not 'sometimes'" in error
        for error in bad.import_errors.values()
    )


@pytest.mark.usefixtures("airflow_settings")
def test_retries_back_off_exponentially_and_failures_are_recorded() -> None:
    from sfmlops_orchestration.failures import record_failure  # noqa: PLC0415

    bag = load()

    for dag in bag.dags.values():
        for task in dag.tasks:
            assert task.retries == 3, task.task_id
            assert task.retry_delay == dt.timedelta(minutes=2)
            assert task.retry_exponential_backoff == 2.0
            assert task.max_retry_delay == dt.timedelta(minutes=30)
            assert record_failure in task.on_failure_callback, task.task_id


@pytest.mark.usefixtures("airflow_settings")
def test_the_training_sensor_frees_its_slot_and_has_a_bounded_wait() -> None:
    sensor = load().dags[WEEKLY].get_task("wait_for_training_job")

    assert sensor.mode == "reschedule"
    assert sensor.timeout == 6 * 3600
    assert sensor.poke_interval == 60


@pytest.mark.usefixtures("airflow_settings")
def test_the_weekly_model_set_is_a_param_defaulting_to_the_configured_one() -> None:
    default = load().dags[WEEKLY].params
    configured = load(SFMLOPS_TRAINING_MODELS=" gbm, prophet,,gbm ").dags[WEEKLY].params
    bad = load(SFMLOPS_TRAINING_MODELS="gbm;prophet")

    assert default["models"] is None  # the API's default set
    assert configured["models"] == ["gbm", "prophet"]
    assert bad.dags == {}
    assert all(
        "SFMLOPS_TRAINING_MODELS must be comma-separated model names" in error
        for error in bad.import_errors.values()
    )


@pytest.mark.usefixtures("airflow_settings")
def test_the_runner_is_configuration_and_bad_settings_are_import_errors() -> None:
    cli = load().dags[DAILY].get_task("stream_once")
    pods = load(SFMLOPS_COMMAND_RUNNER="kubernetes").dags[DAILY].get_task("stream_once")
    bad = load(SFMLOPS_TASK_RETRIES="three")

    assert type(cli).__name__ == "PythonOperator"
    assert type(pods).__name__ == "KubernetesPodOperator"
    assert pods.cmds == ["sfmlops"]
    assert pods.arguments == ["stream", "--once"]
    assert "sfmlops_image" in pods.image
    env = {var.name: var for var in pods.env_vars}
    assert env["SFMLOPS_DB_PASSWORD"].value_from.secret_key_ref.name == "sfmlops-postgresql"
    assert "$(SFMLOPS_DB_PASSWORD)@$(SFMLOPS_DB_HOST)" in env["SFMLOPS_DATABASE_URL"].value
    signing_key = env["SFMLOPS_MODEL_SIGNING_KEY"].value_from.secret_key_ref
    assert (signing_key.name, signing_key.key) == ("sfmlops-model-signing", "key")
    assert pods.env_from[0].config_map_ref.name == "sfmlops-endpoints"
    assert bad.dags == {}
    assert all(
        "SFMLOPS_TASK_RETRIES must be a whole number, not 'three'" in error
        for error in bad.import_errors.values()
    )
    assert len(bad.import_errors) == 2
