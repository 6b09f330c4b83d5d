"""PostgreSQL killed with SIGKILL and restarted under a running API taking sales writes.

The cluster is this test's own (`own_postgres`), so killing it touches nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, event, select

from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.adapters.db.tables import ingest_dead_letters, sales
from sfmlops.services import loading
from tests.support.killable_postgres import KillablePostgres
from tests.support.network import free_port

pytestmark = pytest.mark.integration
RECORDS_PER_BATCH = 5


@dataclass
class Writer:
    """Posts batches of new sales records until stopped, remembering every answer."""

    url: str
    answers: list[tuple[int, int | str]] = field(default_factory=list)  # (batch, status)
    stop: threading.Event = field(default_factory=threading.Event)

    def batch(self, number: int) -> list[dict[str, object]]:
        return [
            {"store_id": 1 + store, "product_id": f"batch-{number}", "sales_date": "2015-06-14",
             "sales": float(number), "open": 1, "promo": 0, "state_holiday": "0",
             "school_holiday": 0}
            for store in range(RECORDS_PER_BATCH)
        ]  # fmt: skip

    def run(self) -> None:
        number = 0
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(
                        f"{self.url}/v1/sales", json={"records": self.batch(number)}
                    )
                    self.answers.append((number, response.status_code))
                except httpx.TransportError as error:
                    self.answers.append((number, type(error).__name__))
                number += 1
                time.sleep(0.05)

    def acknowledged(self) -> set[int]:
        return {number for number, answer in self.answers if answer == 200}

    def count(self, answer: int | str) -> int:
        return sum(1 for _, given in self.answers if given == answer)


def _wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _loaded(url: str, rossmann_slice: Path) -> Engine:
    engine = make_engine(url)
    migrate(engine)
    loading.load_folder(engine, rossmann_slice)
    return engine


def test_a_killed_database_loses_and_duplicates_no_acknowledged_write(
    own_postgres: KillablePostgres, rossmann_slice: Path, tmp_path: Path
) -> None:
    engine = _loaded(own_postgres.url, rossmann_slice)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFMLOPS_")} | {
        "SFMLOPS_HOME": str(tmp_path / "home"),
        "SFMLOPS_DATABASE_URL": own_postgres.url,
    }
    log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen(
        [str(Path(sys.executable).with_name("sfmlops")), "serve", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    writer = Writer(url)
    thread = threading.Thread(target=writer.run, daemon=True)
    try:
        _wait_for(lambda: _status(f"{url}/health") == 200, 120, "the API")
        thread.start()
        _wait_for(lambda: len(writer.acknowledged()) >= 10, 60, "writes before the kill")

        own_postgres.kill()
        _wait_for(lambda: writer.count(503) >= 3, 60, "503s while the database is down")
        while_down = httpx.get(f"{url}/ready", params={"require_model": "false"}, timeout=10)
        own_postgres.restart()
        before = len(writer.acknowledged())
        # Recovers by itself: no restart of the API, the pool reconnects.
        _wait_for(lambda: len(writer.acknowledged()) >= before + 10, 120, "writes after restart")
        ready_again = httpx.get(f"{url}/ready", params={"require_model": "false"}, timeout=10)
    finally:
        writer.stop.set()
        thread.join(timeout=60)
        api.terminate()
        api.wait(timeout=60)
        log.close()

    assert while_down.status_code == 503
    assert "database" in while_down.json()["reason"]
    assert ready_again.status_code == 200
    # Every answer was a success or a 503: no 500, no dropped connection.
    assert {answer for _, answer in writer.answers} <= {200, 503}, writer.answers
    with engine.connect() as connection:
        rows = connection.execute(
            select(sales.c.product_id, sales.c.store_id, sales.c.sales).where(
                sales.c.product_id.like("batch-%")
            )
        ).all()
        dead_letters = connection.execute(select(ingest_dead_letters)).all()
    engine.dispose()
    stored: dict[int, list[tuple[int, float]]] = {}
    for product_id, store_id, amount in rows:
        stored.setdefault(int(product_id.removeprefix("batch-")), []).append((store_id, amount))
    # Nothing acknowledged is lost, and a batch is stored whole or not at all (one transaction).
    assert writer.acknowledged() <= set(stored)
    for number, records in stored.items():
        assert sorted(records) == [(1 + s, float(number)) for s in range(RECORDS_PER_BATCH)]
    # Nothing is duplicated: one row per key (the primary key) and no dead letters at all.
    assert len(rows) == len({(p, s) for p, s, _ in rows})
    assert dead_letters == []
    assert "Traceback" not in (tmp_path / "api.log").read_text()


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None


def test_the_ingested_at_index_is_built_without_blocking_writes(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    statements: list[str] = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda _conn, _cursor, statement, *_args: statements.append(" ".join(statement.split())),
    )
    migrate(engine, "0003")
    statements.clear()
    migrate(engine, "0004")
    engine.dispose()

    index_builds = [s for s in statements if "ix_sales_ingested_at" in s]
    assert index_builds == [
        "DROP INDEX CONCURRENTLY IF EXISTS ix_sales_ingested_at",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_sales_ingested_at ON sales USING brin "
        "(ingested_at)",
    ]
