"""Parse-time configuration of the DAGs, from environment variables only (no I/O).

| variable | meaning | default |
| --- | --- | --- |
| SFMLOPS_COMMAND_RUNNER | how `sfmlops` commands run: `cli` (a local command) or `kubernetes` (pods) | cli |
| SFMLOPS_TASK_RETRIES | retries of every task | 3 |
| SFMLOPS_RETRY_DELAY_SECONDS | first retry delay; doubles each retry (exponential backoff) | 120 |
| SFMLOPS_MAX_RETRY_DELAY_SECONDS | cap on the retry delay | 1800 |
| SFMLOPS_TRAINING_POKE_SECONDS | how often the sensor asks for the training job | 60 |
| SFMLOPS_TRAINING_TIMEOUT_SECONDS | how long the weekly DAG waits for training | 21600 (6 h) |
| SFMLOPS_TRAINING_MODELS | comma-separated model set of the weekly training (e.g. `gbm,seasonal_naive,prophet`), the default of its `models` param; the API checks the names | (none: the API's default set) |
| SFMLOPS_POD_CONFIG_MAP | ConfigMap the sfmlops pods read their settings from | sfmlops-endpoints |
| SFMLOPS_POD_SECRETS | comma-separated Secrets the pods read whole | (none) |
| SFMLOPS_POD_DATABASE_SECRET | `name:key` of the database password; the pods compose SFMLOPS_DATABASE_URL from it and the ConfigMap's SFMLOPS_DB_* as the chart's own pods do; empty: none | sfmlops-postgresql:app-password |
| SFMLOPS_POD_SIGNING_SECRET | `name:key` of the model signing key (SFMLOPS_MODEL_SIGNING_KEY: the pods verify each bundle before loading it); empty: none | sfmlops-model-signing:key |
| SFMLOPS_DAILY_STREAM_TASK | `true`: the daily DAG starts with `stream --once`; `false`: another runner owns the stream job (the chart's stream Deployment or CronJob: two Spark queries must never share its checkpoint) and the DAG starts with the ingest check | true |
| SFMLOPS_POD_HOME_CLAIM | PersistentVolumeClaim mounted as SFMLOPS_HOME of the stateful command pods (`stream --once`: its checkpoints); empty, and for every other pod: a scratch volume | (none) |
| SFMLOPS_POD_LABELS | JSON object of the pods' labels (the chart's NetworkPolicies admit pods by them) | the chart's `airflow-task` labels |
| SFMLOPS_POD_RESOURCES | JSON `{"requests": {...}, "limits": {...}}` of each pod's container | 500m/1Gi, limits 2/4Gi |

The Helm chart renders the POD settings and the Variables sfmlops_image and sfmlops_namespace
(as AIRFLOW_VAR_*) into the ConfigMap sfmlops-airflow-tasks that the Airflow release reads.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from dataclasses import dataclass, field
from typing import Literal

CommandRunner = Literal["cli", "kubernetes"]
RUNNERS: tuple[CommandRunner, ...] = ("cli", "kubernetes")
# What sfmlops-helm renders for release `sfmlops` (its labels of component `airflow-task`).
POD_LABELS = {"app.kubernetes.io/name": "airflow-task", "app.kubernetes.io/instance": "sfmlops"}
POD_RESOURCES = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"cpu": "2", "memory": "4Gi"},
}


@dataclass(frozen=True)
class DagConfig:
    """How the DAGs are built; one instance per parse, from `from_environment()`."""

    command_runner: CommandRunner = "cli"
    retries: int = 3
    retry_delay: dt.timedelta = dt.timedelta(minutes=2)
    max_retry_delay: dt.timedelta = dt.timedelta(minutes=30)
    training_poke_interval: dt.timedelta = dt.timedelta(minutes=1)
    training_timeout: dt.timedelta = dt.timedelta(hours=6)
    # The weekly training's model set; empty: the API's default. Checked by the API (the
    # DAGs do not import sfmlops), which refuses an unknown name before any job starts.
    training_models: tuple[str, ...] = ()
    # Whether the daily DAG runs the stream job: false where something else runs it.
    daily_stream_task: bool = True
    # How long the API may take to serve a new champion (it polls the registry every
    # SFMLOPS_MODEL_POLL_TRAINING_SECONDS, 2 s by default, while a job runs or has just
    # succeeded, else every SFMLOPS_MODEL_POLL_SECONDS, then loads the bundle).
    champion_wait: dt.timedelta = dt.timedelta(minutes=3)
    pod_config_map: str = "sfmlops-endpoints"
    pod_secrets: tuple[str, ...] = ()
    pod_database_secret: tuple[str, str] | None = ("sfmlops-postgresql", "app-password")
    pod_signing_secret: tuple[str, str] | None = ("sfmlops-model-signing", "key")
    pod_home_claim: str | None = None
    pod_labels: dict[str, str] = field(default_factory=lambda: dict(POD_LABELS))
    pod_resources: dict[str, dict[str, str]] = field(
        default_factory=lambda: copy.deepcopy(POD_RESOURCES)
    )

    @classmethod
    def from_environment(cls) -> DagConfig:
        """Read the SFMLOPS_* variables above.

        Raises:
            ValueError: On an unknown runner or a number that is not one (a DAG import error
                that names the variable, rather than a DAG quietly built with a default).
        """
        runner = os.environ.get("SFMLOPS_COMMAND_RUNNER", "cli")
        if runner not in RUNNERS:
            raise ValueError(f"SFMLOPS_COMMAND_RUNNER must be one of {RUNNERS}, not {runner!r}")
        secrets = os.environ.get("SFMLOPS_POD_SECRETS", "")
        return cls(
            command_runner=runner,  # type: ignore[arg-type]  # checked against RUNNERS above
            retries=_number("SFMLOPS_TASK_RETRIES", 3),
            retry_delay=dt.timedelta(seconds=_number("SFMLOPS_RETRY_DELAY_SECONDS", 120)),
            max_retry_delay=dt.timedelta(seconds=_number("SFMLOPS_MAX_RETRY_DELAY_SECONDS", 1800)),
            training_poke_interval=dt.timedelta(
                seconds=_number("SFMLOPS_TRAINING_POKE_SECONDS", 60)
            ),
            training_timeout=dt.timedelta(
                seconds=_number("SFMLOPS_TRAINING_TIMEOUT_SECONDS", 6 * 3600)
            ),
            champion_wait=dt.timedelta(seconds=_number("SFMLOPS_CHAMPION_WAIT_SECONDS", 180)),
            training_models=_names("SFMLOPS_TRAINING_MODELS"),
            daily_stream_task=_flag("SFMLOPS_DAILY_STREAM_TASK", default=True),
            pod_config_map=os.environ.get("SFMLOPS_POD_CONFIG_MAP", "sfmlops-endpoints"),
            pod_secrets=tuple(name.strip() for name in secrets.split(",") if name.strip()),
            pod_database_secret=_secret_key(
                "SFMLOPS_POD_DATABASE_SECRET", "sfmlops-postgresql:app-password"
            ),
            pod_signing_secret=_secret_key(
                "SFMLOPS_POD_SIGNING_SECRET", "sfmlops-model-signing:key"
            ),
            pod_home_claim=os.environ.get("SFMLOPS_POD_HOME_CLAIM") or None,
            pod_labels=_string_mapping("SFMLOPS_POD_LABELS", POD_LABELS),
            pod_resources=_resources("SFMLOPS_POD_RESOURCES", POD_RESOURCES),
        )


def _number(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value}")
    return value


def _flag(name: str, *, default: bool) -> bool:
    text = os.environ.get(name, "").strip().lower()
    if not text:
        return default
    if text not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, not {text!r}")
    return text == "true"


def _names(name: str) -> tuple[str, ...]:
    text = os.environ.get(name, "")
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if any(not part.replace("_", "").isalnum() for part in names):
        raise ValueError(f"{name} must be comma-separated model names, not {text!r}")
    return names


def _secret_key(name: str, default: str) -> tuple[str, str] | None:
    text = os.environ.get(name, default)
    if not text:
        return None
    secret, _, key = text.partition(":")
    if not (secret and key):
        raise ValueError(f"{name} must be name:key, not {text!r}")
    return secret, key


def _json_object(name: str) -> dict[str, object] | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name} must be a JSON object: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, not {text!r}")
    return value


def _string_mapping(name: str, default: dict[str, str]) -> dict[str, str]:
    value = _json_object(name)
    if value is None:
        return dict(default)
    if not value or not all(isinstance(v, str) and v for v in value.values()):
        raise ValueError(f"{name} must map names to non-empty strings, not {value!r}")
    return {str(k): str(v) for k, v in value.items()}


def _resources(name: str, default: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    value = _json_object(name)
    if value is None:
        return copy.deepcopy(default)
    resources: dict[str, dict[str, str]] = {}
    for kind in ("requests", "limits"):
        amounts = value.get(kind)
        # Requests and limits of CPU and memory, all four: the pods keep the chart's rules.
        if (
            set(value) != {"requests", "limits"}
            or not isinstance(amounts, dict)
            or set(amounts) != {"cpu", "memory"}
        ):
            raise ValueError(
                f"{name} must give requests and limits of cpu and memory, not {value!r}"
            )
        resources[kind] = {str(resource): str(amount) for resource, amount in amounts.items()}
    return resources
