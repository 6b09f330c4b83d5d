"""Commands started together with their database (the stream job in a Helm release) wait for it
to accept their login, instead of exiting and being restarted under a growing back-off."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import typer
from sqlalchemy.engine import make_url

from sfmlops.adapters.db.engine import make_engine
from sfmlops.cli.context import wait_for_database
from tests.support.network import free_port

pytestmark = pytest.mark.integration


def test_the_wait_ends_when_the_database_appears(
    postgres_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The application's database does not exist yet, as before PostgreSQL's roles sidecar ran.
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = make_engine(make_url(postgres_server).set(database=name))
    admin = make_engine(postgres_server, isolation_level="AUTOCOMMIT")

    def create() -> None:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')

    timer = threading.Timer(2.0, create)
    started = time.monotonic()
    timer.start()
    try:
        wait_for_database(engine, 60)
        waited = time.monotonic() - started
    finally:
        timer.join()
        engine.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    assert 1.9 <= waited < 30
    out = capsys.readouterr().out
    assert "waiting up to 60 s for the database at postgresql" in out
    assert f'database "{name}" does not exist' in out  # the reason, on the same line
    assert "answered after" in out
    password = make_url(postgres_server).password
    assert not password or password not in out


def test_a_database_that_never_answers_fails_after_the_wait(
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = make_engine(f"postgresql+psycopg2://nobody:secret@127.0.0.1:{free_port()}/sales")
    started = time.monotonic()

    with pytest.raises(typer.Exit) as stopped:
        wait_for_database(engine, 1)

    assert stopped.value.exit_code == 1
    assert time.monotonic() - started < 10
    error = capsys.readouterr().err
    assert "did not answer within 1 s" in error
    assert "secret" not in error
