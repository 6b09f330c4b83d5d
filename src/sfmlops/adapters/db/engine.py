"""Database engines and migrations: SQLite (embedded) and PostgreSQL from the same code."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Keys of the PostgreSQL advisory locks sfmlops takes. Advisory keys are one bigint namespace
# per database, shared with any other application: these spell "sfmlop" + a purpose in ASCII.
MIGRATION_LOCK_KEY = 0x73666D6C6F70_6D67  # "sfmlop" "mg"
BOOTSTRAP_LOCK_KEY = 0x73666D6C6F70_6273  # "sfmlop" "bs"
PROMOTION_LOCK_KEY = 0x73666D6C6F70_7072  # "sfmlop" "pr"
TRAINING_JOBS_LOCK_KEY = 0x73666D6C6F70_746A  # "sfmlop" "tj"


CONNECT_TIMEOUT_SECONDS = 10
POOL_TIMEOUT_SECONDS = 10
# SQLite's page cache per connection: 64 MiB for the programs that write in bulk (upserts touch
# the key index all over); SQLite's own 2 MiB default for a server's readers, whose pooled
# connections would each keep 64 MiB once a full scan (GET /v1/status) filled it.
SQLITE_BULK_CACHE_KIB = 65536
SQLITE_READER_CACHE_KIB = 2048
LOCK_POLL_SECONDS = 0.5  # how often a waiter for a database lock tries again


def make_engine(
    url: str,
    *,
    statement_timeout_seconds: float | None = None,
    connect_timeout_seconds: int = CONNECT_TIMEOUT_SECONDS,
    sqlite_cache_kib: int = SQLITE_BULK_CACHE_KIB,
    **options: Any,
) -> Engine:
    """Create an engine for `url`, preparing a SQLite file's folder and pragmas.

    On PostgreSQL nothing waits forever: connecting gives up after `connect_timeout_seconds`,
    waiting for a pooled connection after POOL_TIMEOUT_SECONDS, and each statement after
    `statement_timeout_seconds` (when given; bulk loads and migrations leave it unset).

    Args:
        url: SQLAlchemy URL, e.g. `sqlite:///path/sfmlops.db` or `postgresql+psycopg2://...`.
        statement_timeout_seconds: PostgreSQL's statement_timeout for every session.
        connect_timeout_seconds: libpq's connect_timeout.
        sqlite_cache_kib: SQLite's page cache per connection (PRAGMA cache_size), in KiB.
        **options: Passed on to `sqlalchemy.create_engine`.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **options)
        event.listen(engine, "connect", partial(_sqlite_pragmas, cache_kib=sqlite_cache_kib))
        return engine
    connect_args: dict[str, Any] = {"connect_timeout": connect_timeout_seconds}
    if statement_timeout_seconds is not None:
        connect_args["options"] = f"-c statement_timeout={int(statement_timeout_seconds * 1000)}"
    connect_args |= options.pop("connect_args", {})
    options.setdefault("pool_timeout", POOL_TIMEOUT_SECONDS)
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **options)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, cache_kib: int) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while a load or the stream writes; foreign keys are off by default.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute(f"PRAGMA cache_size=-{int(cache_kib)}")  # negative: KiB, not pages
    cursor.close()


def alembic_config(engine: Engine) -> Config:
    """An Alembic configuration that runs the packaged migrations on `engine`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


@dataclass(frozen=True)
class Migration:
    """What `migrate` did: the schema revision before and after (equal: nothing to do)."""

    before: str | None
    after: str | None

    @property
    def upgraded(self) -> bool:
        """True when this call changed the schema."""
        return self.before != self.after


def migrate(engine: Engine, revision: str = "head") -> Migration:
    """Bring the database schema up to `revision` (idempotent, safe to run concurrently).

    Concurrent callers (several pods or containers starting at once) take turns: the
    upgrade runs under a PostgreSQL advisory lock, or a file lock beside a SQLite file,
    so the first one migrates and the others find the schema already there.
    """
    config = alembic_config(engine)
    with database_lock(engine, MIGRATION_LOCK_KEY, "migrate"):
        before = current_revision(engine)
        target = ScriptDirectory.from_config(config).as_revision_number(revision)
        if before != target:
            command.upgrade(config, revision)
        return Migration(before, current_revision(engine))


def head_revision() -> str | None:
    """The newest revision of the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


@contextmanager
def database_lock(engine: Engine, key: int, purpose: str) -> Iterator[None]:
    """Hold an exclusive lock on the database of `engine`, waiting for it while taken.

    PostgreSQL: a session advisory lock on `key`, held by a connection of its own (the
    server releases it if this process dies). SQLite: an `flock` on a file beside the
    database file, named after `purpose`. Other backends and in-memory databases: no lock.
    """
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        with engine.connect() as connection:
            # Poll rather than block in pg_advisory_lock: a waiter blocked inside a statement
            # holds a snapshot, and a migration holding the lock that builds an index
            # CONCURRENTLY waits for every such snapshot, a deadlock PostgreSQL cannot see
            # (it passes through this process). Between tries the waiter holds nothing.
            while not connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": key}
            ).scalar_one():
                connection.commit()
                time.sleep(LOCK_POLL_SECONDS)
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
        return
    database = engine.url.database if backend == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    path = Path(f"{database}.{purpose}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None before the first migration."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
