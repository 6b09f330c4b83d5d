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

The experiment and the registered model sfmlops uses are created here too, in the tracking store
(MLFLOW_BACKEND_STORE_URI), before the server answers anyone. Without MLflow workspaces, any
logged-in user may create an experiment or a model under a name not yet taken and becomes its
MANAGEr: the reader could otherwise take `sfmlops-forecaster` before the first training, then
delete it or move its aliases. Made by the admin here, they have no manager but the admin.

The values given are the truth: each start sets the passwords and the grants to them, so rotating
a password is changing the Secret (or .env) and restarting MLflow. The writer and the reader hold
exactly their grants on every resource (`*`): a grant on one resource (the MANAGE that creating an
experiment or model gives its creator) is revoked at the next start. With `default_permission =
NO_PERMISSIONS` in the config, any other user gets nothing until granted. Idempotent; a password
shorter than 32 characters or a missing variable stops the start (no default, fail closed).
MLflow and the standard library only: the MLflow image carries no sfmlops code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from mlflow.entities import LifecycleStage
from mlflow.exceptions import MlflowException
from mlflow.server.auth.config import read_auth_config
from mlflow.server.auth.permissions import RESOURCE_TYPE_WORKSPACE, VALID_RESOURCE_TYPES
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
from mlflow.store.model_registry.sqlalchemy_store import (
    SqlAlchemyStore as RegistryStore,
)
from mlflow.store.tracking import DEFAULT_ARTIFACTS_URI
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME

MIN_PASSWORD_CHARS = 32
RESOURCE_TYPES = ("experiment", "registered_model")
WRITER_PERMISSION = "EDIT"
READER_PERMISSION = "READ"
# sfmlops.adapters.mlflow_registry's EXPERIMENT_NAME and MODEL_NAME (this image has no sfmlops).
EXPERIMENT_NAME = "sfmlops-training"
MODEL_NAME = "sfmlops-forecaster"


def main() -> None:
    config = read_auth_config()
    admin = _credentials(
        "MLFLOW_AUTH_ADMIN", config.admin_username or "", config.admin_password or ""
    )
    writer = _credentials("SFMLOPS_MLFLOW_WRITER")
    reader = _credentials("SFMLOPS_MLFLOW_READER")
    if len({admin[0], writer[0], reader[0]}) < 3:
        _fail("the admin, writer and reader need three different user names")
    backend_store_uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
    if not backend_store_uri:
        _fail("MLFLOW_BACKEND_STORE_URI is not set (the tracking store the server will use)")
    _ensure_product_resources(backend_store_uri)
    store = SqlAlchemyStore()
    store.init_db(config.database_uri)
    _ensure_user(store, *admin, is_admin=True)
    for (username, password), permission in (
        (writer, WRITER_PERMISSION),
        (reader, READER_PERMISSION),
    ):
        _ensure_user(store, username, password, is_admin=False)
        _revoke_other_grants(store, username)
        for resource_type in RESOURCE_TYPES:
            _ensure_grant(store, username, resource_type, permission)


def _ensure_product_resources(backend_store_uri: str) -> None:
    """The training experiment and the registered model, owned by no user (see the top).

    The stores are MLflow's own, as the server builds them: on a fresh database the tracking
    store creates its tables here rather than in the server a moment later. The server serves
    artifacts (--serve-artifacts), so its default artifact root is `mlflow-artifacts:/`, and the
    experiment's is that root plus its id, as if the server had created it.
    """
    tracking = TrackingStore(backend_store_uri, DEFAULT_ARTIFACTS_URI)
    experiment = tracking.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        _create_unless_raced(
            lambda: tracking.create_experiment(EXPERIMENT_NAME), f"experiment {EXPERIMENT_NAME}"
        )
    elif experiment.lifecycle_stage == LifecycleStage.DELETED:
        # A deleted experiment keeps its name: training would find it and fail to log.
        tracking.restore_experiment(experiment.experiment_id)
        _say(f"experiment {EXPERIMENT_NAME} restored")
    registry = RegistryStore(backend_store_uri)
    try:
        registry.get_registered_model(MODEL_NAME)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        _create_unless_raced(
            lambda: registry.create_registered_model(MODEL_NAME),
            f"registered model {MODEL_NAME}",
        )


def _create_unless_raced(create: Callable[[], object], label: str) -> None:
    """Run `create` and say that `label` was created; if another replica starting at the same
    moment created it first, there is nothing left to do."""
    try:
        create()
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return
    _say(f"{label} created")


def _revoke_other_grants(store: SqlAlchemyStore, username: str) -> None:
    """Revoke the user's grants on single resources (its `*` grants are set next).

    Creating an experiment or a model makes its creator its MANAGEr: a reader that created one
    before (or the writer, when training created the product's) loses that here. Grants given
    through a role the admin made are the admin's decision and stay.
    """
    user_id = store.get_user(username).id
    types = VALID_RESOURCE_TYPES - {RESOURCE_TYPE_WORKSPACE}
    for grant in store.list_grants(user_id, DEFAULT_WORKSPACE_NAME, types):
        if grant.resource_type == RESOURCE_TYPE_WORKSPACE or grant.resource_pattern == "*":
            continue
        try:
            store.revoke_user_resource_permission(
                username, grant.resource_type, grant.resource_pattern
            )
        except MlflowException as error:
            # A role's grant, not the user's own; or another replica revoked it just now.
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            continue
        _say(
            f"user {username}: {grant.permission} on {grant.resource_type} "
            f"{grant.resource_pattern} revoked"
        )


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
