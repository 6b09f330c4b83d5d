"""Tasks that run an `sfmlops` command, locally or as a pod: configuration, not DAG code.

`cli`: the command at SFMLOPS_CLI (default `sfmlops` on PATH) runs as a child process of the
task, with the worker's SFMLOPS_* environment. `kubernetes`: the sfmlops image runs as a pod
(image and namespace from the Airflow Variables `sfmlops_image` and `sfmlops_namespace`, read
when the task runs), its settings from the release's ConfigMap and Secrets.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections import deque
from typing import Any

from sfmlops_orchestration.dag_config import DagConfig

log = logging.getLogger(__name__)

TAIL_LINES = 20  # lines of the command's output repeated in the task's error
# The sfmlops images' user and SFMLOPS_HOME (images/sfmlops/Dockerfile, the chart's ConfigMap).
POD_USER = 10001
POD_HOME = "/var/lib/sfmlops"
# How the sfmlops chart's pods build their database URL (sfmlops-helm/templates/_helpers.tpl).
DATABASE_URL = (
    "postgresql+psycopg2://$(SFMLOPS_DB_USER):$(SFMLOPS_DB_PASSWORD)"
    "@$(SFMLOPS_DB_HOST):$(SFMLOPS_DB_PORT)/$(SFMLOPS_DB_NAME)"
)


class CommandFailedError(RuntimeError):
    """An sfmlops command exited non-zero (its last output lines are in the message)."""


def sfmlops_command(
    task_id: str,
    arguments: list[str],
    config: DagConfig,
    doc_md: str,
    *,
    keeps_state: bool = False,
) -> Any:
    """An operator running `sfmlops <arguments>`; the arguments are Jinja-templated.

    Args:
        keeps_state: The command resumes from what its last run left in SFMLOPS_HOME (the
            stream job's checkpoints): as a pod, it mounts the claim SFMLOPS_POD_HOME_CLAIM
            there. Other pods get a scratch home. A local command always has the worker's.
    """
    if config.command_runner == "kubernetes":
        return _pod(task_id, arguments, config, doc_md, keeps_state=keeps_state)
    from airflow.providers.standard.operators.python import PythonOperator  # noqa: PLC0415

    return PythonOperator(
        task_id=task_id, python_callable=run_sfmlops, op_args=arguments, doc_md=doc_md
    )


def run_sfmlops(*arguments: str) -> str:
    """Run the sfmlops command, streaming its output into the task log.

    Returns:
        The command's last output line (often a JSON report), pushed as the task's XCom.

    Raises:
        CommandFailedError: When it exits non-zero, with its last output lines.
    """
    command = [*shlex.split(os.environ.get("SFMLOPS_CLI", "sfmlops")), *arguments]
    log.info("running %s", shlex.join(command))
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Wide, plain output: tables and reports stay readable in the task log.
            env=os.environ | {"COLUMNS": "200", "NO_COLOR": "1"},
        )
    except OSError as error:
        raise CommandFailedError(
            f"cannot start {command[0]!r} (set SFMLOPS_CLI to the sfmlops command): {error}"
        ) from error
    with process:
        for line in process.stdout or ():
            log.info("%s", line.rstrip())
            tail.append(line.rstrip())
    if process.returncode != 0:
        output = "\n".join(tail)
        raise CommandFailedError(
            f"`sfmlops {shlex.join(arguments)}` exited with {process.returncode}:\n{output}"
        )
    return tail[-1] if tail else ""


def _pod(
    task_id: str, arguments: list[str], config: DagConfig, doc_md: str, *, keeps_state: bool
) -> Any:
    # The provider imports the Kubernetes client: only in this mode, never in `cli` parses.
    from airflow.providers.cncf.kubernetes.operators.pod import (  # noqa: PLC0415
        KubernetesPodOperator,
    )
    from kubernetes.client import models as k8s  # noqa: PLC0415

    env_from = [
        k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=config.pod_config_map))
    ] + [
        k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=secret))
        for secret in config.pod_secrets
    ]
    env_vars = [
        k8s.V1EnvVar(name="MLFLOW_DISABLE_TELEMETRY", value="true"),
        k8s.V1EnvVar(name="HOME", value="/tmp"),
    ]
    if config.pod_database_secret:
        name, key = config.pod_database_secret
        password = k8s.V1SecretKeySelector(name=name, key=key)
        env_vars += [
            k8s.V1EnvVar(
                name="SFMLOPS_DB_PASSWORD", value_from=k8s.V1EnvVarSource(secret_key_ref=password)
            ),
            # Kubernetes expands $(VAR) from the ConfigMap and the line above.
            k8s.V1EnvVar(name="SFMLOPS_DATABASE_URL", value=DATABASE_URL),
        ]
    if config.pod_signing_secret:
        name, key = config.pod_signing_secret
        signing_key = k8s.V1SecretKeySelector(name=name, key=key)
        env_vars.append(
            k8s.V1EnvVar(
                name="SFMLOPS_MODEL_SIGNING_KEY",
                value_from=k8s.V1EnvVarSource(secret_key_ref=signing_key),
            )
        )
    # Only a stateful command mounts the claim: a ReadWriteOnce volume in every pod would hold
    # unrelated tasks back while another node has it. /tmp is scratch; the rest is read-only.
    home = (
        k8s.V1Volume(
            name="home",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                claim_name=config.pod_home_claim
            ),
        )
        if keeps_state and config.pod_home_claim
        else k8s.V1Volume(name="home", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="1Gi"))
    )
    volumes = [
        home,
        k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="4Gi")),
    ]
    mounts = [
        k8s.V1VolumeMount(name="home", mount_path=POD_HOME),
        k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
    ]
    # The same hardening as the chart's own pods: non-root, no privilege, read-only root.
    seccomp = k8s.V1SeccompProfile(type="RuntimeDefault")
    pod_security = k8s.V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=POD_USER,
        run_as_group=POD_USER,
        fs_group=POD_USER,
        fs_group_change_policy="OnRootMismatch",
        seccomp_profile=seccomp,
    )
    container_security = k8s.V1SecurityContext(
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=seccomp,
    )
    return KubernetesPodOperator(
        task_id=task_id,
        name=f"sfmlops-{task_id.replace('_', '-')}",
        image="{{ var.value.get('sfmlops_image', 'sfmlops:latest') }}",
        namespace="{{ var.value.get('sfmlops_namespace', 'sfmlops') }}",
        cmds=["sfmlops"],
        arguments=arguments,
        labels=dict(config.pod_labels),
        env_from=env_from,
        env_vars=env_vars,
        volumes=volumes,
        volume_mounts=mounts,
        security_context=pod_security,
        container_security_context=container_security,
        container_resources=k8s.V1ResourceRequirements(
            requests=config.pod_resources["requests"], limits=config.pod_resources["limits"]
        ),
        # The commands never call the Kubernetes API.
        automount_service_account_token=False,
        # The image is large (a JRE, Spark, Ray): its first pull on a node takes minutes.
        startup_timeout_seconds=600,
        get_logs=True,
        on_finish_action="delete_succeeded_pod",  # a failed pod stays for inspection
        doc_md=doc_md,
    )
