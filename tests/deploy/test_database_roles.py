"""One role per database in the chart's PostgreSQL: MLflow and Airflow log in as their own
database's role, not as the superuser that owns the sales; the container that makes the roles
is run against a real PostgreSQL, on a fresh server and on one an older release filled."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from sfmlops.adapters.db.engine import make_engine, migrate
from tests.support.deploy import Rendered, render, render_values

POSTGRESQL = "sfmlops-postgresql"
ROLES_CONTAINER = "database-roles"


def _containers(rendered: Rendered) -> dict[str, dict]:  # type: ignore[type-arg]
    statefulset = rendered.get("StatefulSet", POSTGRESQL)
    assert statefulset is not None
    return {item["name"]: item for item in statefulset["spec"]["template"]["spec"]["containers"]}


def _env(container: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {item["name"]: item for item in container["env"]}


def _secret_key(variable: dict) -> tuple[str, str]:  # type: ignore[type-arg]
    reference = variable["valueFrom"]["secretKeyRef"]
    return reference["name"], reference["key"]


def test_mlflow_and_airflow_log_in_as_their_own_databases_roles() -> None:
    rendered = render("defaults")
    secret = rendered.get("Secret", POSTGRESQL)
    assert secret is not None
    assert set(secret["data"]) == {"password", "mlflow-password", "airflow-password"}
    passwords = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert len(set(passwords.values())) == 3, "each role has a password of its own"

    mlflow = rendered.get("Deployment", "sfmlops-mlflow")
    assert mlflow is not None
    env = _env(mlflow["spec"]["template"]["spec"]["containers"][0])
    assert env["SFMLOPS_DB_USER"]["value"] == "mlflow"
    assert _secret_key(env["SFMLOPS_DB_PASSWORD"]) == (POSTGRESQL, "mlflow-password")
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith(
        "postgresql+psycopg2://$(SFMLOPS_DB_USER):$(SFMLOPS_DB_PASSWORD)@"
    )

    metadata = rendered.get("Secret", "sfmlops-airflow-metadata", namespace="airflow")
    assert metadata is not None
    connection = make_url(base64.b64decode(metadata["data"]["connection"]).decode())
    assert (connection.username, connection.database) == ("airflow", "airflow")
    assert connection.password == passwords["airflow-password"]

    roles = _containers(rendered)[ROLES_CONTAINER]
    roles_env = _env(roles)
    assert roles_env["ROLE_DATABASES"]["value"] == "mlflow airflow"
    assert _secret_key(roles_env["ROLE_PASSWORD_MLFLOW"]) == (POSTGRESQL, "mlflow-password")
    assert _secret_key(roles_env["ROLE_PASSWORD_AIRFLOW"]) == (POSTGRESQL, "airflow-password")
    assert _secret_key(roles_env["PGPASSWORD"]) == (POSTGRESQL, "password")
    # The sales database stays served whatever the roles container does; the checks skipped
    # for it (probes) still hold for the server.
    assert not {"readinessProbe", "livenessProbe"} & roles.keys()
    assert {"readinessProbe", "livenessProbe"} <= _containers(rendered)["postgresql"].keys()


def test_without_database_roles_everything_logs_in_as_before() -> None:
    rendered = render_values("no-database-roles", [], ["postgresql.databaseRoles.enabled=false"])
    assert set(_containers(rendered)) == {"postgresql"}
    secret = rendered.get("Secret", POSTGRESQL)
    assert secret is not None
    assert set(secret["data"]) == {"password"}
    mlflow = rendered.get("Deployment", "sfmlops-mlflow")
    assert mlflow is not None
    env = _env(mlflow["spec"]["template"]["spec"]["containers"][0])
    assert "SFMLOPS_DB_USER" not in env  # the sales role, from the endpoint ConfigMap
    assert _secret_key(env["SFMLOPS_DB_PASSWORD"]) == (POSTGRESQL, "password")
    metadata = rendered.get("Secret", "sfmlops-airflow-metadata", namespace="airflow")
    assert metadata is not None
    connection = make_url(base64.b64decode(metadata["data"]["connection"]).decode())
    assert connection.username == "sfmlops"


@dataclass
class Server:
    """The test session's PostgreSQL, its superuser standing in for the chart's auth.username."""

    url: str
    sales_database: str
    prefix: str

    def url_of(self, database: str, user: str | None = None, password: str | None = None) -> str:
        url = make_url(self.url).set(database=database)
        if user is not None:
            url = url.set(username=user, password=password)
        return url.render_as_string(hide_password=False)

    def run_roles(self, passwords: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """The rendered container's script, as the chart runs it but against this server."""
        [script] = _containers(render("defaults"))[ROLES_CONTAINER]["args"]
        url = make_url(self.url)
        env = os.environ | {
            "PGHOST": str(url.host),
            "PGPORT": str(url.port),
            "PGUSER": str(url.username),
            "PGPASSWORD": str(url.password or ""),
            "PGDATABASE": self.sales_database,
            "ROLE_DATABASES": " ".join(passwords),
            "ROLES_WAIT_SECONDS": "10",
        }
        env |= {f"ROLE_PASSWORD_{name.upper()}": password for name, password in passwords.items()}
        env.pop("ROLES_HOLD", None)
        return subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, check=False
        )


@pytest.fixture
def server(postgres_url: str) -> Iterator[Server]:
    """A migrated sales database; roles and databases the test makes are dropped after it."""
    engine = make_engine(postgres_url)
    migrate(engine)
    engine.dispose()
    url = make_url(postgres_url)
    prefix = f"r{uuid.uuid4().hex[:8]}"
    made = Server(
        url.set(database="postgres").render_as_string(hide_password=False),
        str(url.database),
        prefix,
    )
    yield made
    admin = make_engine(made.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name in (f"{prefix}_mlflow", f"{prefix}_airflow"):
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.exec_driver_sql(f'DROP ROLE IF EXISTS "{name}"')
    admin.dispose()


def _autocommit(url: str) -> Engine:
    return make_engine(url, isolation_level="AUTOCOMMIT")


def _an_older_release_fills(server: Server, database: str) -> None:
    """What a release without roles left: a database and objects owned by the superuser."""
    with _autocommit(server.url).connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
    engine = _autocommit(server.url_of(database))
    with engine.connect() as connection:
        for statement in (
            "CREATE TYPE stage AS ENUM ('None', 'Production')",
            "CREATE TABLE runs (id serial PRIMARY KEY, stage stage, name text UNIQUE)",
            "CREATE TABLE metrics (id bigint GENERATED ALWAYS AS IDENTITY, run_id int"
            " REFERENCES runs (id))",
            "CREATE SEQUENCE versions",
            "CREATE VIEW production AS SELECT * FROM runs WHERE stage = 'Production'",
            "CREATE FUNCTION run_count() RETURNS bigint LANGUAGE sql AS"
            " 'SELECT count(*) FROM runs'",
            "CREATE SCHEMA auth",
            "CREATE TABLE auth.users (name text PRIMARY KEY)",
            "INSERT INTO runs (stage, name) VALUES ('Production', 'first')",
        ):
            connection.exec_driver_sql(statement)
    engine.dispose()


def _stored_password_is(server: Server, role: str, password: str) -> bool:
    """Whether the role's SCRAM verifier is one of `password` (RFC 7677).

    The test server trusts local connections, so a wrong password would still log in: the
    stored verifier is what tells which password the role has.
    """
    with _autocommit(server.url).connect() as connection:
        verifier = connection.execute(
            text("SELECT rolpassword FROM pg_authid WHERE rolname = :role"), {"role": role}
        ).scalar()
    method, iterations_salt, keys = str(verifier).split("$")
    assert method == "SCRAM-SHA-256", method
    iterations, salt = iterations_salt.split(":")
    stored_key, server_key = keys.split(":")
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key and (
        base64.b64encode(hmac.new(salted, b"Server Key", "sha256").digest()).decode() == server_key
    )


def _is_refused(url: str) -> str:
    engine = make_engine(url)
    try:
        with pytest.raises(OperationalError) as refused, engine.connect():
            pass
    finally:
        engine.dispose()
    return str(refused.value)


@pytest.mark.integration
def test_each_database_gets_a_role_that_owns_it_and_reaches_nothing_else(
    server: Server,
) -> None:
    mlflow, airflow = f"{server.prefix}_mlflow", f"{server.prefix}_airflow"
    _an_older_release_fills(server, mlflow)
    passwords = {mlflow: uuid.uuid4().hex, airflow: uuid.uuid4().hex}

    done = server.run_roles(passwords)
    assert done.returncode == 0, done.stderr
    assert f"{mlflow} is owned by the role {mlflow}" in done.stdout

    as_mlflow = _autocommit(server.url_of(mlflow, mlflow, passwords[mlflow]))
    with as_mlflow.connect() as connection:
        # Everything the older release made is the role's now: usable and alterable.
        connection.exec_driver_sql("INSERT INTO runs (stage, name) VALUES ('None', 'second')")
        connection.exec_driver_sql("INSERT INTO metrics (run_id) VALUES (1)")
        assert connection.execute(text("SELECT run_count()")).scalar() == 2
        assert connection.execute(text("SELECT count(*) FROM production")).scalar() == 1
        connection.exec_driver_sql("SELECT nextval('versions')")
        connection.exec_driver_sql("INSERT INTO auth.users VALUES ('admin')")
        connection.exec_driver_sql("ALTER TABLE runs ADD COLUMN tags text")  # a migration
        connection.exec_driver_sql("ALTER TYPE stage ADD VALUE 'Archived'")
        connection.exec_driver_sql("CREATE TABLE experiments (id serial PRIMARY KEY)")
        # ... and nothing beyond its database.
        attributes = connection.execute(
            text(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles"
                " WHERE rolname = current_user"
            )
        ).one()
        assert tuple(attributes) == (False, False, False, False)
        with pytest.raises(ProgrammingError, match="permission denied"):
            connection.exec_driver_sql("CREATE ROLE intruder")
    as_mlflow.dispose()

    for database in (server.sales_database, airflow):
        refusal = _is_refused(server.url_of(database, mlflow, passwords[mlflow]))
        assert "permission denied for database" in refusal, refusal

    # The other database did not exist: it is made, owned by its role.
    as_airflow = _autocommit(server.url_of(airflow, airflow, passwords[airflow]))
    with as_airflow.connect() as connection:
        owner = connection.execute(
            text("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :name"),
            {"name": airflow},
        ).scalar()
        assert owner == airflow
        connection.exec_driver_sql("CREATE TABLE dag (dag_id text PRIMARY KEY)")
    as_airflow.dispose()

    # The sales database's owner still reaches everything.
    with _autocommit(server.url_of(server.sales_database)).connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM sales")).scalar() == 0


@pytest.mark.integration
def test_a_rerun_is_idempotent_and_sets_a_changed_password(server: Server) -> None:
    mlflow = f"{server.prefix}_mlflow"
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    assert server.run_roles({mlflow: first}).returncode == 0
    assert _stored_password_is(server, mlflow, first)
    with _autocommit(server.url_of(mlflow, mlflow, first)).connect() as connection:
        connection.exec_driver_sql("CREATE TABLE kept (id int)")
        connection.exec_driver_sql("INSERT INTO kept VALUES (1)")

    again = server.run_roles({mlflow: second})
    assert again.returncode == 0, again.stderr
    assert _stored_password_is(server, mlflow, second)
    assert not _stored_password_is(server, mlflow, first)
    with _autocommit(server.url_of(mlflow, mlflow, second)).connect() as connection:
        assert connection.execute(text("SELECT id FROM kept")).scalar() == 1


@pytest.mark.integration
def test_a_missing_password_is_named_and_changes_nothing(server: Server) -> None:
    mlflow, airflow = f"{server.prefix}_mlflow", f"{server.prefix}_airflow"
    failed = server.run_roles({mlflow: uuid.uuid4().hex, airflow: ""})
    assert failed.returncode != 0
    assert f"ROLE_PASSWORD_{airflow.upper()} is empty" in failed.stderr
    assert f"Secret key {airflow}-password" in failed.stderr
    with _autocommit(server.url).connect() as connection:
        made = connection.execute(
            text("SELECT count(*) FROM pg_roles WHERE rolname IN (:mlflow, :airflow)"),
            {"mlflow": mlflow, "airflow": airflow},
        ).scalar()
        assert made == 0
        sales_connect = connection.execute(
            text("SELECT has_database_privilege('public', :name, 'CONNECT')"),
            {"name": server.sales_database},
        ).scalar()
        assert sales_connect is True
