"""The chart's backup CronJob: rendered as configured, and its script run against a real
PostgreSQL (dumps that pg_restore reads, the newest `keep` kept per database)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import make_url

from sfmlops.adapters.db.engine import make_engine, migrate
from tests.support.deploy import admitted, labels_of, render, render_values

pytestmark = pytest.mark.integration
BACKUP = "sfmlops-backup"


def _container(rendered_name: str = "everything") -> dict:  # type: ignore[type-arg]
    cron = render(rendered_name).get("CronJob", BACKUP)
    assert cron is not None, "backup.enabled=true renders no CronJob"
    [container] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def test_the_backup_cronjob_dumps_every_database_into_its_kept_volume() -> None:
    rendered = render("everything")
    cron = rendered.get("CronJob", BACKUP)
    assert cron is not None
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    env = {item["name"]: item.get("value") for item in _container()["env"]}
    assert env["BACKUP_DATABASES"] == "sfmlops mlflow airflow"
    assert env["BACKUP_KEEP"] == "7"
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


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
def test_the_backup_script_writes_restorable_dumps_and_keeps_the_newest(
    postgres_url: str, tmp_path: Path
) -> None:
    engine = make_engine(postgres_url)
    migrate(engine)
    engine.dispose()
    url = make_url(postgres_url)
    container = _container()
    [script] = container["args"]
    env = os.environ | {
        "PGHOST": str(url.host),
        "PGPORT": str(url.port),
        "PGUSER": str(url.username),
        "PGPASSWORD": str(url.password or ""),
        "BACKUP_DATABASES": str(url.database),
        "BACKUP_KEEP": "2",
        "BACKUP_DIR": str(tmp_path),
    }
    for _ in range(3):
        subprocess.run(["bash", "-c", script], env=env, check=True, capture_output=True)
        time.sleep(1.1)  # dumps are named by the second

    dumps = sorted(tmp_path.glob("*.dump"))
    assert len(dumps) == 2, dumps
    assert not list(tmp_path.glob("*.partial"))
    listing = subprocess.run(
        ["pg_restore", "--list", str(dumps[-1])], check=True, capture_output=True, text=True
    ).stdout
    assert "TABLE public sales" in listing
    # A database that cannot be dumped fails the job (and leaves no complete-looking file).
    broken = env | {"BACKUP_DATABASES": "no_such_database"}
    failed = subprocess.run(["bash", "-c", script], check=False, env=broken, capture_output=True)
    assert failed.returncode != 0
    assert not list(tmp_path.glob("no_such_database-*.dump"))
