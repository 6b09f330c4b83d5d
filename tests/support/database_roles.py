"""A real PostgreSQL with the chart's database roles: the `database-roles` script run against
the test session's server, as the chart runs it, and what the tests check with it."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import pytest
from sqlalchemy import Engine, make_url
from sqlalchemy.exc import OperationalError

from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.core import columns
from tests.support.deploy import render

POSTGRESQL = "sfmlops-postgresql"
ROLES_CONTAINER = "database-roles"


def rendered_script(kind: str, name: str, container: str) -> str:
    """The one `bash -c` argument of a container the default chart (backup on) renders."""
    rendered = render("everything")
    workload = rendered.get(kind, name)
    assert workload is not None, f"{kind}/{name} is not rendered"
    spec = workload["spec"]
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    [found] = [item for item in spec["template"]["spec"]["containers"] if item["name"] == container]
    [script] = found["args"]
    return str(script)


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

    def run_roles(
        self,
        passwords: dict[str, str],
        databases: dict[str, str] | None = None,
        readers: dict[str, str] | None = None,
        path: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """The rendered container's script, as the chart runs it but against this server.

        `passwords` maps each role to its password, `databases` a role to the database it
        owns when that is not the database of its name, `readers` a read-only role (its
        password in `passwords` too) to the database it reads; `path`, a folder searched
        before PATH (a wrapper around psql).
        """
        databases, readers = databases or {}, readers or {}
        entries = [
            f"{role}:{databases.get(role, role)}:{role}-password"
            for role in passwords
            if role not in readers
        ]
        reading = [f"{role}:{database}:{role}-password" for role, database in readers.items()]
        script = rendered_script("StatefulSet", POSTGRESQL, ROLES_CONTAINER)
        url = make_url(self.url)
        env = os.environ | {
            "PGHOST": str(url.host),
            "PGPORT": str(url.port),
            "PGUSER": str(url.username),
            "PGPASSWORD": str(url.password or ""),
            "PGDATABASE": self.sales_database,
            "DATABASE_ROLES": " ".join(entries),
            "DATABASE_READERS": " ".join(reading),
            "ROLES_WAIT_SECONDS": "10",
        }
        env |= {f"ROLE_PASSWORD_{name.upper()}": password for name, password in passwords.items()}
        env.pop("ROLES_HOLD", None)
        if path is not None:
            env["PATH"] = f"{path}:{env['PATH']}"
        return subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, check=False
        )


@contextmanager
def roles_server(postgres_url: str) -> Iterator[Server]:
    """A migrated sales database; the roles and databases named after the prefix
    (`<prefix>_app`, `_reader`, `_mlflow`, `_airflow`, `_sales`) are dropped afterwards."""
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
    try:
        yield made
    finally:
        admin = autocommit(made.url)
        with admin.connect() as connection:
            # The sales database first: the application role may own it.
            databases = (
                made.sales_database,
                f"{prefix}_mlflow",
                f"{prefix}_airflow",
                f"{prefix}_sales",
            )
            for name in databases:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            # Roles last: their grants went with the databases.
            for name in (
                f"{prefix}_reader",
                f"{prefix}_mlflow",
                f"{prefix}_airflow",
                f"{prefix}_app",
            ):
                connection.exec_driver_sql(f'DROP ROLE IF EXISTS "{name}"')
        admin.dispose()


def autocommit(url: str) -> Engine:
    return make_engine(url, isolation_level="AUTOCOMMIT")


def refusal_of(url: str) -> str:
    """The error of a connection to `url`, which must fail."""
    engine = make_engine(url)
    try:
        with pytest.raises(OperationalError) as refused, engine.connect():
            pass
    finally:
        engine.dispose()
    return str(refused.value)


def two_days_of_sales() -> pd.DataFrame:
    """Two sales rows of store 1, for a role to write and a backup to carry."""
    return pd.DataFrame(
        {
            columns.STORE_ID: [1, 1],
            columns.PRODUCT_ID: columns.DEFAULT_PRODUCT,
            columns.SALES_DATE: pd.to_datetime(["2015-07-30", "2015-07-31"]),
            columns.SALES: [5263.0, 5020.0],
            columns.CUSTOMERS: [555, 546],
            columns.OPEN: 1,
            columns.PROMO: 1,
            columns.STATE_HOLIDAY: "0",
            columns.SCHOOL_HOLIDAY: 1,
        }
    )
