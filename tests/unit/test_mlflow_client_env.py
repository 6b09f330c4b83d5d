"""A server's short MLflow timeouts stay the server's: the jobs it starts get the user's."""

from __future__ import annotations

from sfmlops.adapters.mlflow_client_env import (
    SERVING_CLIENT_ENV_SET,
    serving_client_env_names,
    use_serving_client_env,
    without_serving_client_env,
)


def test_a_server_sets_only_what_the_user_left_unset_and_its_jobs_get_the_users_back() -> None:
    environ = {"PATH": "/usr/bin", "MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}

    use_serving_client_env(environ)
    use_serving_client_env(environ)  # a second start (another app in the process) changes nothing

    assert environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"  # the user's choice holds
    assert environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert sorted(serving_client_env_names(environ)) == [
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        SERVING_CLIENT_ENV_SET,
    ]
    assert without_serving_client_env(environ) == {
        "PATH": "/usr/bin",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "300",
    }


def test_an_environment_no_server_touched_passes_whole() -> None:
    environ = {"PATH": "/usr/bin", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}

    assert serving_client_env_names(environ) == []
    assert without_serving_client_env(environ) == environ
