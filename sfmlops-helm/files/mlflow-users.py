"""sfmlops's users of MLflow's basic-auth app, made before the tracking server starts.

Runs in the MLflow server's container just ahead of `mlflow server --app-name basic-auth` (the
chart's mlflow Deployment, Compose's mlflow service), with the same MLFLOW_AUTH_CONFIG_PATH, and
writes the basic-auth app's own user store (the store the server itself creates its admin with):
the users exist before the first request, and no admin session over HTTP is needed.

- The admin (MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD): created, or its password set to the given one.
- The writer (SFMLOPS_MLFLOW_WRITER_USERNAME/PASSWORD): EDIT on every experiment and registered
  model. Training, Ray's pods and Airflow's task pods log runs, register versions, move aliases.
- The reader (SFMLOPS_MLFLOW_READER_USERNAME/PASSWORD): READ on every experiment and registered
  model. The API loads champions with it and can neither register a version nor move an alias.

The values given are the truth: each start sets the passwords and the grants to them, so rotating
a password is changing the Secret (or .env) and restarting MLflow. With `default_permission =
NO_PERMISSIONS` in the config, any other user gets nothing until granted. Idempotent; a password
shorter than 32 characters or a missing variable stops the start (no default, fail closed).
MLflow and the standard library only: the MLflow image carries no sfmlops code.
"""

from __future__ import annotations

import os
import sys

from mlflow.exceptions import MlflowException
from mlflow.server.auth.config import read_auth_config
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME

MIN_PASSWORD_CHARS = 32
RESOURCE_TYPES = ("experiment", "registered_model")
WRITER_PERMISSION = "EDIT"
READER_PERMISSION = "READ"


def main() -> None:
    config = read_auth_config()
    admin = _credentials(
        "MLFLOW_AUTH_ADMIN", config.admin_username or "", config.admin_password or ""
    )
    writer = _credentials("SFMLOPS_MLFLOW_WRITER")
    reader = _credentials("SFMLOPS_MLFLOW_READER")
    if len({admin[0], writer[0], reader[0]}) < 3:
        _fail("the admin, writer and reader need three different user names")
    store = SqlAlchemyStore()
    store.init_db(config.database_uri)
    _ensure_user(store, *admin, is_admin=True)
    for (username, password), permission in (
        (writer, WRITER_PERMISSION),
        (reader, READER_PERMISSION),
    ):
        _ensure_user(store, username, password, is_admin=False)
        for resource_type in RESOURCE_TYPES:
            _ensure_grant(store, username, resource_type, permission)


def _credentials(prefix: str, username: str = "", password: str = "") -> tuple[str, str]:
    username = os.environ.get(f"{prefix}_USERNAME", username)
    password = os.environ.get(f"{prefix}_PASSWORD", password)
    if not username:
        _fail(f"{prefix}_USERNAME is not set (no default)")
    if len(password) < MIN_PASSWORD_CHARS:
        _fail(f"{prefix}_PASSWORD needs at least {MIN_PASSWORD_CHARS} characters (no default)")
    return username, password


def _ensure_user(store: SqlAlchemyStore, username: str, password: str, *, is_admin: bool) -> None:
    if not store.has_user(username, use_primary=True):
        try:
            store.create_user(username, password, is_admin=is_admin)
            _say(f"user {username} created{' (admin)' if is_admin else ''}")
            return
        except MlflowException as error:
            # Another replica starting at the same moment created it: check it as an existing one.
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    if not store.authenticate_user(username, password, use_primary=True):
        store.update_user(username, password=password)
        _say(f"user {username}: password set")
    if store.get_user(username).is_admin != is_admin:
        store.update_user(username, is_admin=is_admin)
        _say(f"user {username}: admin {is_admin}")


def _ensure_grant(
    store: SqlAlchemyStore, username: str, resource_type: str, permission: str
) -> None:
    """`permission` on every resource of the type ("*"), replacing another level given before."""
    user_id = store.get_user(username).id
    current = {
        grant.permission
        for grant in store.list_grants(user_id, DEFAULT_WORKSPACE_NAME, {resource_type})
        if grant.resource_type == resource_type and grant.resource_pattern == "*"
    }
    if current == {permission}:
        return
    if current:
        store.revoke_user_resource_permission(username, resource_type, "*")
    try:
        store.grant_user_resource_permission(username, resource_type, "*", permission)
    except MlflowException as error:
        # Another replica starting at the same moment granted it.
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return
    _say(f"user {username}: {permission} on every {resource_type}")


def _say(message: str) -> None:
    print(f"mlflow-users: {message}", flush=True)


def _fail(message: str) -> None:
    print(f"mlflow-users: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
