"""Parse-time configuration of the DAGs, from environment variables only (no I/O).

| variable | meaning | default |
| --- | --- | --- |
| SFMLOPS_COMMAND_RUNNER | how `sfmlops` commands run: `cli` (a local command) or `kubernetes` (pods) | cli |
| SFMLOPS_TASK_RETRIES | retries of every task | 3 |
| SFMLOPS_RETRY_DELAY_SECONDS | first retry delay; doubles each retry (exponential backoff) | 120 |
| SFMLOPS_MAX_RETRY_DELAY_SECONDS | cap on the retry delay | 1800 |
| SFMLOPS_TRAINING_POKE_SECONDS | how often the sensor asks for the training job | 60 |
| SFMLOPS_TRAINING_TIMEOUT_SECONDS | how long the weekly DAG waits for training | 21600 (6 h) |
| SFMLOPS_POD_CONFIG_MAP | ConfigMap the sfmlops pods read their settings from | sfmlops-endpoints |
| SFMLOPS_POD_SECRETS | comma-separated Secrets the pods read whole | (none) |
| SFMLOPS_POD_DATABASE_SECRET | `name:key` of the database password; the pods compose SFMLOPS_DATABASE_URL from it and the ConfigMap's SFMLOPS_DB_* as the chart's own pods do; empty: none | sfmlops-postgresql:password |
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Literal

CommandRunner = Literal["cli", "kubernetes"]
RUNNERS: tuple[CommandRunner, ...] = ("cli", "kubernetes")


@dataclass(frozen=True)
class DagConfig:
    """How the DAGs are built; one instance per parse, from `from_environment()`."""

    command_runner: CommandRunner = "cli"
    retries: int = 3
    retry_delay: dt.timedelta = dt.timedelta(minutes=2)
    max_retry_delay: dt.timedelta = dt.timedelta(minutes=30)
    training_poke_interval: dt.timedelta = dt.timedelta(minutes=1)
    training_timeout: dt.timedelta = dt.timedelta(hours=6)
    pod_config_map: str = "sfmlops-endpoints"
    pod_secrets: tuple[str, ...] = ()
    pod_database_secret: tuple[str, str] | None = ("sfmlops-postgresql", "password")

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
        database_secret = os.environ.get(
            "SFMLOPS_POD_DATABASE_SECRET", "sfmlops-postgresql:password"
        )
        name, _, key = database_secret.partition(":")
        if database_secret and not (name and key):
            raise ValueError(
                f"SFMLOPS_POD_DATABASE_SECRET must be name:key, not {database_secret!r}"
            )
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
            pod_config_map=os.environ.get("SFMLOPS_POD_CONFIG_MAP", "sfmlops-endpoints"),
            pod_secrets=tuple(name.strip() for name in secrets.split(",") if name.strip()),
            pod_database_secret=(name, key) if database_secret else None,
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
