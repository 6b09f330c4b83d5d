"""`sfmlops init` run concurrently, and `sfmlops bootstrap` run twice: real processes, real databases.

What Compose's bootstrap service and the chart's hook Jobs rely on: several containers
starting at once migrate the schema once between them, and the bootstrap does its work
once and then reports that there is nothing to do.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from sfmlops.adapters.db.engine import head_revision, make_engine
from sfmlops.adapters.db.tables import forecasts, sales
from tests.support.cli_processes import environment
from tests.support.network import free_port

pytestmark = pytest.mark.e2e

CONCURRENT_RUNS = 4


def _environment(home: Path, database_url: str) -> dict[str, str]:
    return environment(home, database_url=database_url) | {"COLUMNS": "200", "NO_COLOR": "1"}


def _sfmlops(home: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("sfmlops")), *args],
        env=_environment(home, database_url),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _concurrent_inits(home: Path, database_url: str) -> list[tuple[int, str]]:
    command = [str(Path(sys.executable).with_name("sfmlops")), "init"]
    children = [
        subprocess.Popen(
            command,
            env=_environment(home, database_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(CONCURRENT_RUNS)
    ]
    return [(child.wait(timeout=300), child.communicate()[0]) for child in children]


def test_concurrent_inits_on_postgresql_all_succeed_and_one_of_them_migrates(
    tmp_path: Path, postgres_url: str
) -> None:
    database_url = postgres_url
    results = _concurrent_inits(tmp_path / "home", database_url)

    assert [code for code, _ in results] == [0] * CONCURRENT_RUNS, results
    outputs = [output for _, output in results]
    migrated = [output for output in outputs if "migrated from empty" in output]
    assert len(migrated) == 1, outputs
    assert sum("already at" in output for output in outputs) == CONCURRENT_RUNS - 1, outputs
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    finally:
        engine.dispose()
    assert [row[0] for row in versions] == [head_revision()]


def test_bootstrap_loads_trains_forecasts_once_then_has_nothing_to_do(
    tmp_path: Path, postgres_url: str, rossmann_slice: Path
) -> None:
    home = tmp_path / "home"
    arguments = [
        "bootstrap",
        "--train-stores",
        "2",
        "--windows",
        "1",
        "--path",
        str(rossmann_slice),
    ]

    first = _sfmlops(home, postgres_url, *arguments)

    assert first.returncode == 0, first.stdout + first.stderr
    assert "migrated from empty" in first.stdout
    assert "training the first 2 stores" in first.stdout
    # A training job that takes the champion writes its precomputed forecasts itself, so
    # the forecast step finds them there.
    assert "already forecast by version 1, nothing written" in first.stdout
    assert "Bootstrap done (schema, data, training)" in first.stdout
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as connection:
            sales_rows = connection.execute(select(func.count()).select_from(sales)).scalar_one()
            forecast_stores = connection.execute(
                select(forecasts.c.store_id).distinct().order_by(forecasts.c.store_id)
            ).all()
        assert sales_rows > 0
        assert [row[0] for row in forecast_stores] == [1, 2]

        second = _sfmlops(home, postgres_url, *arguments)

        assert second.returncode == 0, second.stdout + second.stderr
        assert "Nothing to do" in second.stdout
        assert "champion version 1 already registered, not trained" in second.stdout
        with engine.connect() as connection:
            assert (
                connection.execute(select(func.count()).select_from(sales)).scalar_one()
                == sales_rows
            )
    finally:
        engine.dispose()


def test_bootstrap_refuses_an_unknown_executor_and_changes_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    result = _sfmlops(tmp_path / "home", postgres_url, "bootstrap", "--executor", "gpu")

    assert result.returncode == 1
    assert "--executor: choose one of" in result.stderr
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as connection:
            tables = connection.execute(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert tables == 0


def test_bootstrap_waits_for_an_absent_database_then_fails_naming_it(tmp_path: Path) -> None:
    port = free_port()
    unreachable = f"postgresql+psycopg2://sfmlops:secret@127.0.0.1:{port}/sfmlops"

    result = _sfmlops(tmp_path / "home", unreachable, "bootstrap", "--wait", "3")

    assert result.returncode == 1
    assert "waiting up to 3 s for the database" in result.stdout
    # The error names the database it waited for, with its password masked.
    assert f"the database at postgresql+psycopg2://sfmlops:***@127.0.0.1:{port}/sfmlops" in (
        result.stderr
    )
    assert "did not answer within 3 s" in result.stderr
    assert "secret" not in result.stderr


def test_a_waiter_for_the_migration_lock_does_not_block_an_index_built_concurrently(
    postgres_url: str,
) -> None:
    # A migration holding the lock may build an index CONCURRENTLY, which waits for every
    # open snapshot: a waiter blocked inside `pg_advisory_lock` would hold one forever.
    import threading  # noqa: PLC0415

    from sfmlops.adapters.db.engine import MIGRATION_LOCK_KEY, database_lock  # noqa: PLC0415

    engine = make_engine(postgres_url)
    waiter_done = threading.Event()

    def wait_for_lock() -> None:
        with database_lock(engine, MIGRATION_LOCK_KEY, "migrations"):
            waiter_done.set()

    try:
        with database_lock(engine, MIGRATION_LOCK_KEY, "migrations"):
            waiter = threading.Thread(target=wait_for_lock, daemon=True)
            waiter.start()
            assert not waiter_done.wait(1.5)  # it waits while the lock is held
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("SET statement_timeout = '20s'"))
                connection.execute(text("CREATE TABLE lock_probe (id integer)"))
                connection.execute(
                    text("CREATE INDEX CONCURRENTLY lock_probe_id ON lock_probe (id)")
                )
        assert waiter_done.wait(20)
        waiter.join(5)
    finally:
        engine.dispose()
