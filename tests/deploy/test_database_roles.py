"""One role per database in the chart's PostgreSQL: the sales programs log in as the application
role, MLflow and Airflow as their own database's role, none of them as the server's superuser;
the container that makes the roles is run against a real PostgreSQL, on a fresh server and on
one an older release filled."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shlex
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import make_url, text
from sqlalchemy.exc import InternalError, ProgrammingError

from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.adapters.db.sales_records import sales_summary, upsert_sales
from sfmlops.services import loading
from sfmlops.services.api import create_app
from sfmlops.settings import Settings
from tests.support.api_tokens import AUTH, TOKEN
from tests.support.database_roles import (
    POSTGRESQL,
    ROLES_CONTAINER,
    Server,
    autocommit,
    refusal_of,
    two_days_of_sales,
)
from tests.support.deploy import Rendered, admitted, labels_of, render, render_values
from tests.support.network import free_port

SUPERUSER, APPLICATION = "sfmlops", "sfmlops_app"
INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE


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
    assert set(secret["data"]) == {
        "password",
        "app-password",
        "mlflow-password",
        "airflow-password",
        "reader-password",
    }
    passwords = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert len(set(passwords.values())) == 5, "each role has a password of its own"

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
    assert roles_env["DATABASE_ROLES"]["value"] == (
        "sfmlops_app:sfmlops:app-password mlflow:mlflow:mlflow-password"
        " airflow:airflow:airflow-password"
    )
    assert _secret_key(roles_env["ROLE_PASSWORD_SFMLOPS_APP"]) == (POSTGRESQL, "app-password")
    assert _secret_key(roles_env["ROLE_PASSWORD_MLFLOW"]) == (POSTGRESQL, "mlflow-password")
    assert _secret_key(roles_env["ROLE_PASSWORD_AIRFLOW"]) == (POSTGRESQL, "airflow-password")
    assert _secret_key(roles_env["PGPASSWORD"]) == (POSTGRESQL, "password")
    # The sales database stays served whatever the roles container does; the checks skipped
    # for it (probes) still hold for the server.
    assert not {"readinessProbe", "livenessProbe"} & roles.keys()
    assert {"readinessProbe", "livenessProbe"} <= _containers(rendered)["postgresql"].keys()


def _sales_programs(rendered: Rendered) -> dict[str, dict]:  # type: ignore[type-arg]
    """Every container that gets the sales database's URL, by workload/container."""
    programs = {}
    for item in rendered.objects:
        spec = item.get("spec", {})
        if item["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if item["kind"] == "RayCluster":
            groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
            pods = [group["template"]["spec"] for group in groups]
        elif "template" in spec:
            pods = [spec["template"]["spec"]]
        else:
            continue
        for pod in pods:
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                env = _env(container) if "env" in container else {}
                if "SFMLOPS_DATABASE_URL" in env:
                    name = f"{item['kind']}/{item['metadata']['name']}/{container['name']}"
                    programs[name] = env
    return programs


def test_every_sales_program_logs_in_as_the_application_role() -> None:
    rendered = render("everything")
    programs = _sales_programs(rendered)
    # The API, the migrations and bootstrap Jobs, the stream job and Ray's head and workers.
    for expected in (
        "Deployment/sfmlops-api/api",
        "Job/sfmlops-migrations/migrations",
        "Job/sfmlops-bootstrap/bootstrap",
        "RayCluster/sfmlops-ray/ray-head",
    ):
        assert expected in programs, sorted(programs)
    assert any(name.startswith("Deployment/sfmlops-stream") for name in programs), sorted(programs)
    endpoints = rendered.get("ConfigMap", "sfmlops-endpoints")
    assert endpoints is not None
    assert endpoints["data"]["SFMLOPS_DB_USER"] == APPLICATION
    for name, env in programs.items():
        user = env["SFMLOPS_DB_USER"]["value"] if "SFMLOPS_DB_USER" in env else APPLICATION
        assert user == APPLICATION, name
        assert _secret_key(env["SFMLOPS_DB_PASSWORD"]) == (POSTGRESQL, "app-password"), name
    # Airflow's task pods read the same Secret key.
    tasks = rendered.get("ConfigMap", "sfmlops-airflow-tasks", namespace="airflow")
    assert tasks is not None
    assert tasks["data"]["SFMLOPS_POD_DATABASE_SECRET"] == f"{POSTGRESQL}:app-password"

    # The superuser stays with the server and the roles container; the backup dumps each
    # database as its owner (tests/deploy/test_backup_job.py).
    containers = _containers(rendered)
    assert _env(containers["postgresql"])["POSTGRES_USER"]["value"] == SUPERUSER
    assert _env(containers[ROLES_CONTAINER])["PGUSER"]["value"] == SUPERUSER
    backup = rendered.get("CronJob", "sfmlops-backup")
    assert backup is not None
    [dump] = backup["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert "PGUSER" not in _env(dump)
    assert _secret_key(_env(dump)["ROLE_PASSWORD_SFMLOPS_APP"]) == (POSTGRESQL, "app-password")
    assert all(
        _secret_key(variable)[1] != "password"
        for variable in _env(dump).values()
        if "valueFrom" in variable
    )
    superuser_readers = {
        name
        for name, env in programs.items()
        if _secret_key(env["SFMLOPS_DB_PASSWORD"])[1] == "password"
    }
    assert superuser_readers == set()


def test_the_application_role_cannot_be_the_superuser() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"must differ from postgresql\.auth\.username"):
        render_values("same-role", [], ["postgresql.databaseRoles.application.username=sfmlops"])


def test_without_database_roles_everything_logs_in_as_before() -> None:
    rendered = render_values("no-database-roles", [], ["postgresql.databaseRoles.enabled=false"])
    assert set(_containers(rendered)) == {"postgresql"}
    secret = rendered.get("Secret", POSTGRESQL)
    assert secret is not None
    assert set(secret["data"]) == {"password"}
    assert rendered.get("ConfigMap", "sfmlops-endpoints")["data"]["SFMLOPS_DB_USER"] == SUPERUSER  # type: ignore[index]
    mlflow = rendered.get("Deployment", "sfmlops-mlflow")
    assert mlflow is not None
    env = _env(mlflow["spec"]["template"]["spec"]["containers"][0])
    assert "SFMLOPS_DB_USER" not in env  # the sales role, from the endpoint ConfigMap
    assert _secret_key(env["SFMLOPS_DB_PASSWORD"]) == (POSTGRESQL, "password")
    metadata = rendered.get("Secret", "sfmlops-airflow-metadata", namespace="airflow")
    assert metadata is not None
    connection = make_url(base64.b64decode(metadata["data"]["connection"]).decode())
    assert connection.username == "sfmlops"


def _an_older_release_fills(server: Server, database: str) -> None:
    """What a release without roles left: a database and objects owned by the superuser."""
    with autocommit(server.url).connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
    engine = autocommit(server.url_of(database))
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
    with autocommit(server.url).connect() as connection:
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


@pytest.mark.integration
def test_each_database_gets_a_role_that_owns_it_and_reaches_nothing_else(
    server: Server,
) -> None:
    mlflow, airflow = f"{server.prefix}_mlflow", f"{server.prefix}_airflow"
    application = f"{server.prefix}_app"
    _an_older_release_fills(server, mlflow)
    passwords = {name: uuid.uuid4().hex for name in (application, mlflow, airflow)}

    done = server.run_roles(passwords, databases={application: server.sales_database})
    assert done.returncode == 0, done.stderr
    assert f"{mlflow} is owned by the role {mlflow}" in done.stdout

    as_mlflow = autocommit(server.url_of(mlflow, mlflow, passwords[mlflow]))
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
        refusal = refusal_of(server.url_of(database, mlflow, passwords[mlflow]))
        assert "permission denied for database" in refusal, refusal

    # The other database did not exist: it is made, owned by its role.
    as_airflow = autocommit(server.url_of(airflow, airflow, passwords[airflow]))
    with as_airflow.connect() as connection:
        owner = connection.execute(
            text("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :name"),
            {"name": airflow},
        ).scalar()
        assert owner == airflow
        connection.exec_driver_sql("CREATE TABLE dag (dag_id text PRIMARY KEY)")
    as_airflow.dispose()

    # The sales database is the application role's now; the superuser still reaches it.
    with autocommit(server.url_of(server.sales_database)).connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM sales")).scalar() == 0
        owner = connection.execute(
            text("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :name"),
            {"name": server.sales_database},
        ).scalar()
        assert owner == application


@pytest.mark.integration
def test_no_role_reaches_the_maintenance_databases_nor_creates_in_a_schema(
    server: Server,
) -> None:
    application, mlflow = f"{server.prefix}_app", f"{server.prefix}_mlflow"
    # What PostgreSQL before 15 granted in every new database (pg_upgrade keeps it).
    _an_older_release_fills(server, mlflow)
    with autocommit(server.url_of(mlflow)).connect() as connection:
        connection.exec_driver_sql("GRANT CREATE ON SCHEMA public, auth TO PUBLIC")
    passwords = {application: uuid.uuid4().hex, mlflow: uuid.uuid4().hex}

    done = server.run_roles(passwords, databases={application: server.sales_database})
    again = server.run_roles(passwords, databases={application: server.sales_database})

    assert done.returncode == 0, done.stderr
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""  # nothing left to revoke, no warning
    for role in (application, mlflow):
        for maintenance in ("postgres", "template1"):
            refusal = refusal_of(server.url_of(maintenance, role, passwords[role]))
            assert "permission denied for database" in refusal, (role, maintenance, refusal)
    as_application = autocommit(
        server.url_of(server.sales_database, application, passwords[application])
    )
    with as_application.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM sales")).scalar() == 0
    as_application.dispose()
    with autocommit(server.url).connect() as connection:
        public_reaches = connection.execute(
            text(
                "SELECT datname FROM pg_database WHERE datallowconn AND"
                " (has_database_privilege('public', oid, 'CONNECT')"
                " OR has_database_privilege('public', oid, 'TEMPORARY'))"
            )
        ).scalars()
        assert list(public_reaches) == []
    with autocommit(server.url_of(mlflow)).connect() as connection:
        creatable = connection.execute(
            text(
                "SELECT nspname FROM pg_namespace"
                " WHERE has_schema_privilege('public', oid, 'CREATE')"
            )
        ).scalars()
        assert list(creatable) == []
    # The owner still creates in them.
    with autocommit(server.url_of(mlflow, mlflow, passwords[mlflow])).connect() as connection:
        connection.exec_driver_sql("CREATE TABLE public.tags (name text)")
        connection.exec_driver_sql("CREATE TABLE auth.groups (name text)")


@pytest.mark.integration
def test_a_rerun_is_idempotent_and_sets_a_changed_password(server: Server) -> None:
    mlflow = f"{server.prefix}_mlflow"
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    assert server.run_roles({mlflow: first}).returncode == 0
    assert _stored_password_is(server, mlflow, first)
    with autocommit(server.url_of(mlflow, mlflow, first)).connect() as connection:
        connection.exec_driver_sql("CREATE TABLE kept (id int)")
        connection.exec_driver_sql("INSERT INTO kept VALUES (1)")

    again = server.run_roles({mlflow: second})
    assert again.returncode == 0, again.stderr
    assert _stored_password_is(server, mlflow, second)
    assert not _stored_password_is(server, mlflow, first)
    with autocommit(server.url_of(mlflow, mlflow, second)).connect() as connection:
        assert connection.execute(text("SELECT id FROM kept")).scalar() == 1


@pytest.mark.integration
def test_a_missing_password_is_named_and_changes_nothing(server: Server) -> None:
    mlflow, airflow = f"{server.prefix}_mlflow", f"{server.prefix}_airflow"
    failed = server.run_roles({mlflow: uuid.uuid4().hex, airflow: ""})
    assert failed.returncode != 0
    assert f"ROLE_PASSWORD_{airflow.upper()} is empty" in failed.stderr
    assert f"(key {airflow}-password)" in failed.stderr
    with autocommit(server.url).connect() as connection:
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


@pytest.mark.integration
def test_the_application_role_owns_the_sales_migrates_and_writes_but_administers_nothing(
    server: Server,
) -> None:
    sales, application = f"{server.prefix}_sales", f"{server.prefix}_app"
    mlflow = f"{server.prefix}_mlflow"
    # An older release: the sales database migrated part of the way by the superuser.
    with autocommit(server.url).connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{sales}"')
    older = make_engine(server.url_of(sales))
    migrate(older, "0003")
    older.dispose()
    password = uuid.uuid4().hex

    done = server.run_roles(
        {application: password, mlflow: uuid.uuid4().hex}, databases={application: sales}
    )
    assert done.returncode == 0, done.stderr
    assert f"{sales} is owned by the role {application}" in done.stdout

    as_application = make_engine(server.url_of(sales, application, password))
    # The rest of the migrations (0004 builds an index CONCURRENTLY), then a sales write.
    migrate(as_application)
    with as_application.begin() as connection:
        assert upsert_sales(connection, two_days_of_sales()) == 2
    with as_application.connect() as connection:
        assert sales_summary(connection).rows == 2
        owners = connection.execute(
            text(
                "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            )
        ).scalars()
        assert set(owners) == {application}
        attributes = connection.execute(
            text(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles"
                " WHERE rolname = current_user"
            )
        ).one()
        assert tuple(attributes) == (False, False, False, False)
    as_application.dispose()
    as_application = autocommit(server.url_of(sales, application, password))
    with as_application.connect() as connection:
        for statement in (
            "CREATE ROLE intruder",
            f'ALTER ROLE "{application}" SUPERUSER',
            "CREATE DATABASE intruder",
            "COPY (SELECT 1) TO PROGRAM 'true'",
        ):
            with pytest.raises(ProgrammingError) as refused:
                connection.exec_driver_sql(statement)
            assert getattr(refused.value.orig, "pgcode", None) == INSUFFICIENT_PRIVILEGE, statement
    as_application.dispose()
    refusal = refusal_of(server.url_of(mlflow, application, password))
    assert "permission denied for database" in refusal, refusal


def test_the_reader_role_is_rendered_with_its_password_and_its_clients() -> None:
    rendered = render("everything")  # the reader for the namespace "reporting" too
    secret = rendered.get("Secret", POSTGRESQL)
    assert secret is not None
    assert "reader-password" in secret["data"]
    roles = _env(_containers(rendered)[ROLES_CONTAINER])
    assert roles["DATABASE_READERS"]["value"] == "sfmlops_reader:sfmlops:reader-password"
    assert _secret_key(roles["ROLE_PASSWORD_SFMLOPS_READER"]) == (POSTGRESQL, "reader-password")
    target = labels_of(rendered, "StatefulSet", POSTGRESQL)
    assert admitted(rendered, target, None, "reporting")
    # On by default (the API reads as it), but no other namespace is let in.
    defaults = render("defaults")
    assert "DATABASE_READERS" in _env(_containers(defaults)[ROLES_CONTAINER])
    assert not admitted(defaults, target, None, "reporting")
    with pytest.raises(pytest.fail.Exception, match=r"reader\.username must differ"):
        render_values(
            "reader-as-application",
            [],
            [
                "postgresql.databaseRoles.reader.enabled=true",
                "postgresql.databaseRoles.reader.username=sfmlops_app",
            ],
        )


def _api_env(rendered: Rendered) -> dict[str, dict]:  # type: ignore[type-arg]
    api = rendered.get("Deployment", "sfmlops-api")
    assert api is not None
    [container] = api["spec"]["template"]["spec"]["containers"]
    return _env(container)


def test_the_api_reads_as_the_reader_and_writes_as_the_application_role() -> None:
    env = _api_env(render("defaults"))
    # The read URL is composed in the pod from the reader's password, as the main URL is.
    assert _secret_key(env["SFMLOPS_DB_READ_PASSWORD"]) == (POSTGRESQL, "reader-password")
    assert env["SFMLOPS_DATABASE_READ_URL"]["value"] == (
        "postgresql+psycopg2://sfmlops_reader:$(SFMLOPS_DB_READ_PASSWORD)@"
        "$(SFMLOPS_DB_HOST):$(SFMLOPS_DB_PORT)/$(SFMLOPS_DB_NAME)"
    )
    assert _secret_key(env["SFMLOPS_DB_PASSWORD"]) == (POSTGRESQL, "app-password")
    names = list(env)
    # Kubernetes expands $(VAR) only from variables listed before.
    assert names.index("SFMLOPS_DB_READ_PASSWORD") < names.index("SFMLOPS_DATABASE_READ_URL")
    # No other program gets the read URL: the stream, Ray and the Jobs write.
    readers = [
        name
        for name, program in _sales_programs(render("everything")).items()
        if "SFMLOPS_DATABASE_READ_URL" in program
    ]
    assert readers == ["Deployment/sfmlops-api/api"]
    # Without the role (off, or no role per database, or an external database) the API reads
    # through its one URL.
    for name, values in (
        ("reader-off", ["postgresql.databaseRoles.reader.enabled=false"]),
        ("roles-off", ["postgresql.databaseRoles.enabled=false"]),
    ):
        env = _api_env(render_values(name, [], values))
        assert "SFMLOPS_DATABASE_READ_URL" not in env, name
        assert "SFMLOPS_DB_READ_PASSWORD" not in env, name
    external = render("external-database")
    assert "SFMLOPS_DATABASE_READ_URL" not in _api_env(external)


@pytest.mark.integration
def test_the_reader_role_reads_every_sales_table_now_and_later_and_nothing_more(
    server: Server,
) -> None:
    application, reader = f"{server.prefix}_app", f"{server.prefix}_reader"
    mlflow = f"{server.prefix}_mlflow"
    passwords = {name: uuid.uuid4().hex for name in (application, mlflow, reader)}
    readers = {reader: server.sales_database}

    done = server.run_roles(passwords, {application: server.sales_database}, readers)
    again = server.run_roles(passwords, {application: server.sales_database}, readers)

    assert done.returncode == 0, done.stderr
    assert again.returncode == 0, again.stderr
    assert f"{reader} reads every table of {server.sales_database}" in done.stdout
    as_application = make_engine(
        server.url_of(server.sales_database, application, passwords[application])
    )
    with as_application.begin() as connection:
        upsert_sales(connection, two_days_of_sales())
        # A later migration's table: the default privileges cover it.
        connection.exec_driver_sql("CREATE TABLE later_reports (id int)")
        connection.exec_driver_sql("INSERT INTO later_reports VALUES (7)")
    as_application.dispose()
    as_reader = autocommit(server.url_of(server.sales_database, reader, passwords[reader]))
    with as_reader.connect() as connection:
        assert sales_summary(connection).rows == 2
        assert connection.execute(text("SELECT id FROM later_reports")).scalar() == 7
        assert connection.execute(text("SHOW default_transaction_read_only")).scalar() == "on"
        attributes = connection.execute(
            text(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles"
                " WHERE rolname = current_user"
            )
        ).one()
        assert tuple(attributes) == (False, False, False, False)
        # Refused by the privileges, not only by the read-only default, which a session may lift.
        connection.exec_driver_sql("SET default_transaction_read_only = off")
        for statement in (
            "INSERT INTO later_reports VALUES (8)",
            "DELETE FROM sales",
            "UPDATE stores SET state = NULL",
            "CREATE TABLE planted (id int)",
            "CREATE TEMPORARY TABLE scratch (id int)",
            "CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql AS 'SELECT $1'",
        ):
            with pytest.raises(ProgrammingError) as refused:
                connection.exec_driver_sql(statement)
            assert getattr(refused.value.orig, "pgcode", None) == INSUFFICIENT_PRIVILEGE, statement
    as_reader.dispose()
    for database in ("postgres", mlflow):
        refusal = refusal_of(server.url_of(database, reader, passwords[reader]))
        assert "permission denied for database" in refusal, refusal


@pytest.mark.integration
def test_no_role_logs_in_before_the_readers_may_read_what_it_creates(
    server: Server, tmp_path: Path
) -> None:
    # On a fresh server the migrations Job logs in as the application role as soon as it may,
    # while the script still runs: a table made before the reader's default privileges existed
    # would stay unreadable to the reader (the API's reads refused, its writes accepted). A
    # wrapper around psql records, before each of the script's calls, whether the role may log
    # in and whether the reader's default privileges on its tables exist.
    application, reader = f"{server.prefix}_app", f"{server.prefix}_reader"
    passwords = {name: uuid.uuid4().hex for name in (application, reader)}
    psql = shutil.which("psql")
    assert psql is not None
    role = f"(SELECT oid FROM pg_roles WHERE rolname = '{application}')"
    query = (
        f"SELECT coalesce((SELECT rolcanlogin FROM pg_roles WHERE oid = {role}), false),"
        " EXISTS (SELECT FROM pg_default_acl d, aclexplode(d.defaclacl) a"
        f" WHERE d.defaclrole = {role} AND a.privilege_type = 'SELECT'"
        f" AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = '{reader}'))"
    )
    states = tmp_path / "states"
    wrapper = tmp_path / "psql"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        f"{psql} --no-psqlrc --tuples-only --no-align -c {shlex.quote(query)}"
        f" </dev/null >>{states}\n"
        f'exec {psql} "$@"\n'
    )
    wrapper.chmod(0o755)

    done = server.run_roles(
        passwords,
        {application: server.sales_database},
        {reader: server.sales_database},
        path=str(tmp_path),
    )

    assert done.returncode == 0, done.stderr
    seen = states.read_text().split()
    assert seen[0] == "f|f", seen  # the role did not exist yet
    assert "t|f" not in seen, seen
    with autocommit(server.url_of(server.sales_database)).connect() as connection:
        can_login = connection.execute(
            text("SELECT rolcanlogin FROM pg_roles WHERE rolname = :name"), {"name": application}
        ).scalar()
    assert can_login is True


@pytest.mark.integration
def test_the_api_reads_through_the_reader_role_and_cannot_write_through_it(
    server: Server, rossmann_slice: Path, tmp_path: Path
) -> None:
    application, reader = f"{server.prefix}_app", f"{server.prefix}_reader"
    passwords = {name: uuid.uuid4().hex for name in (application, reader)}
    done = server.run_roles(
        passwords, {application: server.sales_database}, {reader: server.sales_database}
    )
    assert done.returncode == 0, done.stderr
    writer_url = server.url_of(server.sales_database, application, passwords[application])
    reader_url = server.url_of(server.sales_database, reader, passwords[reader])
    as_application = make_engine(writer_url)
    loading.load_folder(as_application, rossmann_slice)
    as_application.dispose()
    day = {
        "store_id": 1,
        "sales_date": "2015-08-01",
        "sales": 4000.0,
        "customers": 400,
        "open": 1,
        "promo": 0,
        "state_holiday": "0",
        "school_holiday": 0,
    }

    # Both URLs from the settings, as the chart gives them: reads as the reader, writes as
    # the application role.
    with _api(tmp_path, writer_url, reader_url) as client:
        assert client.get("/ready", params={"require_model": "false"}).status_code == 200
        assert len(client.get("/v1/stores").json()["stores"]) == 20
        assert client.get("/v1/stores/1/sales").status_code == 200
        assert client.post("/v1/sales", json={"records": [day]}).json()["accepted"] == 1
        with client.app.state.read_engine.connect() as connection:  # type: ignore[attr-defined]
            assert connection.execute(text("SELECT current_user")).scalar() == reader
            # A write through the read engine is refused by PostgreSQL itself.
            with pytest.raises(InternalError) as refused:
                connection.exec_driver_sql("DELETE FROM audit_events")
            assert getattr(refused.value.orig, "pgcode", None) == READ_ONLY_TRANSACTION
        audited = _as_superuser_scalar(
            server, "SELECT count(*) FROM audit_events WHERE action = 'sales.ingest'"
        )
        assert audited == 1, "the write and its audit row are stored (the reader could not)"

    # The read routes need no writer: with it unreachable they answer, while readiness
    # names the writer and a write answers 503.
    unreachable = make_url(writer_url).set(host="127.0.0.1", port=free_port())
    with _api(tmp_path, unreachable.render_as_string(hide_password=False), reader_url) as client:
        assert client.get("/v1/stores/1/sales").status_code == 200
        assert client.get("/v1/status").json()["stores"] == 20
        assert client.get("/v1/training-jobs").status_code == 200
        assert client.get("/metrics").status_code == 200
        for path in (
            "/v1/stores/1",
            "/v1/stores/1/plan",
            "/v1/dead-letters",
            "/v1/accuracy",
            "/v1/accuracy/stale-stores",
            "/v1/forecasts/latest",  # none precomputed: 404, from the reader
        ):
            assert client.get(path).status_code in (200, 404), path
        ready = client.get("/ready", params={"require_model": "false"})
        assert ready.status_code == 503
        assert ready.json()["reason"] == "database unreachable: OperationalError"
        assert client.post("/v1/sales", json={"records": [day]}).status_code == 503
    # And the other way round: readiness pings the reader too, and names it.
    with _api(tmp_path, writer_url, unreachable.render_as_string(hide_password=False)) as client:
        ready = client.get("/ready", params={"require_model": "false"})
        assert ready.status_code == 503
        assert ready.json()["reason"] == "read-only database unreachable: OperationalError"
        assert client.get("/v1/stores").status_code == 503

    # The reader given as the write URL (a misconfiguration): the write is refused, nothing is
    # stored, and the client is told why rather than "internal server error".
    with _api(tmp_path, reader_url, None) as client:
        next_day = day | {"sales_date": "2015-08-02"}
        refused_write = client.post("/v1/sales", json={"records": [next_day]})
        assert refused_write.status_code == 503
        assert "database role lacks the privilege" in refused_write.json()["detail"]
        history = client.get("/v1/stores/1/sales", params={"end": "2015-08-02"}).json()
        assert history["days"][-1]["sales_date"] == "2015-08-01"


READ_ONLY_TRANSACTION = "25006"  # PostgreSQL's SQLSTATE


@contextmanager
def _api(home: Path, database_url: str, read_url: str | None) -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None,
        home=home / "home",
        database_url=database_url,
        database_read_url=read_url,
        api_token=SecretStr(TOKEN),
        model_poll_seconds=3600,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False, headers=AUTH) as client:
        yield client


def _as_superuser_scalar(server: Server, query: str) -> object:
    engine = autocommit(server.url_of(server.sales_database))
    try:
        with engine.connect() as connection:
            return connection.execute(text(query)).scalar()
    finally:
        engine.dispose()
