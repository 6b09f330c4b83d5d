"""The MLflow client's environment in a server, and in the processes a server starts.

Kept apart from `mlflow_registry` so that starting a job does not import mlflow.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

# A server's registry calls must not hold it up for long: its poller retries on its own
# schedule, so MLflow's own retries (minutes of backoff) are not needed, nor are download
# progress bars in a server's log. MLflow reads these from the environment only, so they are
# process-wide; the names this process set are recorded so that a process it starts (a training
# job of the embedded API) gets MLflow's defaults back: a training on a busy machine must wait
# for a slow registry, not fail after 10 s.
SERVING_CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
SERVING_CLIENT_ENV_SET = "SFMLOPS_SERVING_CLIENT_ENV_SET"
"""Names of `SERVING_CLIENT_ENV` that `use_serving_client_env` set (comma-separated)."""


def use_serving_client_env(environ: MutableMapping[str, str]) -> None:
    """Give this server's MLflow calls short timeouts, unless the user chose their own."""
    chosen = {name for name in environ.get(SERVING_CLIENT_ENV_SET, "").split(",") if name}
    for name, value in SERVING_CLIENT_ENV.items():
        if name not in environ:
            environ[name] = value
            chosen.add(name)
    if chosen:
        environ[SERVING_CLIENT_ENV_SET] = ",".join(sorted(chosen))


def serving_client_env_names(environ: Mapping[str, str]) -> list[str]:
    """The names `use_serving_client_env` set in `environ` (with its record of them)."""
    if SERVING_CLIENT_ENV_SET not in environ:
        return []
    chosen = [name for name in environ[SERVING_CLIENT_ENV_SET].split(",") if name in environ]
    return [*chosen, SERVING_CLIENT_ENV_SET]


def without_serving_client_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for a process this server starts: the user's, not the server's, timeouts."""
    dropped = set(serving_client_env_names(environ))
    return {name: value for name, value in environ.items() if name not in dropped}
