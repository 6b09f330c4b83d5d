"""The chart's backup CronJob: rendered as configured, and its script run against a real
PostgreSQL as each database's owner role (dumps that the owner restores, the newest `keep` kept
per database, no superuser)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import make_url, text

from sfmlops.adapters.db.backup import restore
from sfmlops.adapters.db.engine import make_engine
from sfmlops.adapters.db.sales_records import upsert_sales
from tests.support.database_roles import (
    POSTGRESQL,
    Server,
    autocommit,
    rendered_script,
    two_days_of_sales,
)
from tests.support.deploy import admitted, labels_of, render, render_values

pytestmark = pytest.mark.integration
BACKUP = "sfmlops-backup"


def _container(rendered_name: str = "everything") -> dict:  # type: ignore[type-arg]
    cron = render(rendered_name).get("CronJob", BACKUP)
    assert cron is not None, "backup.enabled=true renders no CronJob"
    [container] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def _secret_keys(container: dict) -> dict[str, tuple[str, str]]:  # type: ignore[type-arg]
    return {
        item["name"]: (
            item["valueFrom"]["secretKeyRef"]["name"],
            item["valueFrom"]["secretKeyRef"]["key"],
        )
        for item in container["env"]
        if "valueFrom" in item
    }


def test_the_backup_cronjob_dumps_every_database_as_its_owner_into_its_kept_volume() -> None:
    rendered = render("everything")
    cron = rendered.get("CronJob", BACKUP)
    assert cron is not None
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    container = _container()
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["BACKUP_DATABASES"] == "sfmlops:sfmlops_app mlflow:mlflow airflow:airflow"
    assert env["BACKUP_KEEP"] == "7"
    # Each role's password, and not the superuser's.
    assert _secret_keys(container) == {
        "ROLE_PASSWORD_SFMLOPS_APP": (POSTGRESQL, "app-password"),
        "ROLE_PASSWORD_MLFLOW": (POSTGRESQL, "mlflow-password"),
        "ROLE_PASSWORD_AIRFLOW": (POSTGRESQL, "airflow-password"),
    }
    assert "PGUSER" not in env
    claim = rendered.get("PersistentVolumeClaim", BACKUP)
    assert claim is not None
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    target = labels_of(rendered, "StatefulSet", "sfmlops-postgresql")
    assert admitted(rendered, target, labels_of(rendered, "CronJob", BACKUP), None)
    # Off by default; an existing claim replaces the chart's own.
    assert render("defaults").get("CronJob", BACKUP) is None
    existing = render_values(
        "backup-existing-claim", [], ["backup.enabled=true", "backup.existingClaim=nfs-backups"]
    )
    assert existing.get("PersistentVolumeClaim", BACKUP) is None


def test_without_database_roles_the_backup_logs_in_as_the_one_user() -> None:
    without = render_values(
        "backup-no-roles", [], ["backup.enabled=true", "postgresql.databaseRoles.enabled=false"]
    ).get("CronJob", BACKUP)
    assert without is not None
    [container] = without["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["BACKUP_DATABASES"] == "sfmlops mlflow airflow"
    assert env["PGUSER"] == "sfmlops"
    assert _secret_keys(container) == {"PGPASSWORD": (POSTGRESQL, "password")}


def _backup(
    script: str, server: Server, entries: str, keep: int, folder: Path, **passwords: str
) -> subprocess.CompletedProcess[str]:
    """The rendered script against the test server, with no PG* login but `passwords`."""
    url = make_url(server.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {
        "PGHOST": str(url.host),
        "PGPORT": str(url.port),
        "BACKUP_DATABASES": entries,
        "BACKUP_KEEP": str(keep),
        "BACKUP_DIR": str(folder),
    }
    return subprocess.run(
        ["bash", "-c", script], env=env | passwords, check=False, capture_output=True, text=True
    )


def _owners_made(server: Server) -> tuple[str, str, dict[str, str]]:
    """The sales and MLflow owner roles made by the roles script: their names and passwords."""
    application, mlflow = f"{server.prefix}_app", f"{server.prefix}_mlflow"
    passwords = {application: uuid.uuid4().hex, mlflow: uuid.uuid4().hex}
    roles = server.run_roles(passwords, databases={application: server.sales_database})
    assert roles.returncode == 0, roles.stderr
    return application, mlflow, passwords


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
def test_each_owner_dumps_its_database_and_restores_it_and_the_newest_are_kept(
    server: Server, tmp_path: Path
) -> None:
    application, mlflow, passwords = _owners_made(server)
    as_application = server.url_of(server.sales_database, application, passwords[application])
    as_mlflow = server.url_of(mlflow, mlflow, passwords[mlflow])
    writer = make_engine(as_application)
    with writer.begin() as connection:
        assert upsert_sales(connection, two_days_of_sales()) == 2
    writer.dispose()
    with autocommit(as_mlflow).connect() as connection:
        connection.exec_driver_sql("CREATE TABLE runs (id serial PRIMARY KEY, name text)")
        connection.exec_driver_sql("INSERT INTO runs (name) VALUES ('first'), ('second')")
    script = rendered_script("CronJob", BACKUP, "backup")
    entries = f"{server.sales_database}:{application} {mlflow}:{mlflow}"
    role_passwords = {f"ROLE_PASSWORD_{role.upper()}": value for role, value in passwords.items()}

    for _ in range(3):
        done = _backup(script, server, entries, 2, tmp_path, **role_passwords)
        assert done.returncode == 0, done.stderr
        time.sleep(1.1)  # dumps are named by the second

    # No PGUSER is set: each dump logged in as the role its entry names.
    sales_dumps = sorted(tmp_path.glob(f"{server.sales_database}-*.dump"))
    mlflow_dumps = sorted(tmp_path.glob(f"{mlflow}-*.dump"))
    assert (len(sales_dumps), len(mlflow_dumps)) == (2, 2), sorted(tmp_path.iterdir())
    assert not list(tmp_path.glob("*.partial"))

    # The disaster, then each owner restores its newest dump.
    with autocommit(as_application).connect() as connection:
        connection.exec_driver_sql("DELETE FROM sales")
    with autocommit(as_mlflow).connect() as connection:
        connection.exec_driver_sql("DROP TABLE runs")
    restore(as_application, sales_dumps[-1])  # what `sfmlops restore FILE --yes` runs
    restored = subprocess.run(
        ["pg_restore", "--clean", "--if-exists", "--single-transaction",
         f"--dbname={as_mlflow.replace('postgresql+psycopg2', 'postgresql')}",
         str(mlflow_dumps[-1])],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    with autocommit(as_application).connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM sales")).scalar() == 2
    with autocommit(as_mlflow).connect() as connection:
        names = connection.execute(text("SELECT name FROM runs ORDER BY id")).scalars()
        assert list(names) == ["first", "second"]


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
def test_a_role_reaches_no_other_database_and_a_missing_password_dumps_nothing(
    server: Server, tmp_path: Path
) -> None:
    application, mlflow, passwords = _owners_made(server)
    script = rendered_script("CronJob", BACKUP, "backup")
    role_passwords = {f"ROLE_PASSWORD_{role.upper()}": value for role, value in passwords.items()}

    # MLflow's role may not read the sales: the job fails and leaves no complete-looking dump.
    crossed = _backup(
        script, server, f"{server.sales_database}:{mlflow}", 2, tmp_path, **role_passwords
    )
    assert crossed.returncode != 0
    assert "permission denied for database" in crossed.stderr, crossed.stderr
    missing = _backup(
        script,
        server,
        f"{mlflow}:{mlflow} {server.sales_database}:{application}",
        2,
        tmp_path,
        **{f"ROLE_PASSWORD_{mlflow.upper()}": passwords[mlflow]},
    )
    assert missing.returncode != 0
    assert f"ROLE_PASSWORD_{application.upper()} is empty" in missing.stderr
    broken = _backup(script, server, "no_such_database", 2, tmp_path)
    assert broken.returncode != 0
    assert list(tmp_path.glob("*.dump")) == []
