"""Backups of the sales database: pg_dump/pg_restore for PostgreSQL, SQLite's online backup."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from sqlalchemy.engine import make_url


class BackupError(RuntimeError):
    """A backup or restore could not be made; the message says why."""


def backup(database_url: str, destination: Path) -> Path:
    """Write a consistent copy of the database to `destination` (a file); returns it.

    PostgreSQL: `pg_dump --format=custom` (one snapshot, taken while writers go on).
    SQLite: the online backup API (a consistent copy even while the stream job writes).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        _sqlite_copy(_sqlite_path(database_url), str(destination))
        return destination
    _run([_tool("pg_dump"), "--format=custom", f"--file={destination}"], database_url)
    return destination


def restore(database_url: str, source: Path) -> None:
    """Replace the database's contents with the backup in `source`."""
    if not source.is_file():
        raise BackupError(f"{source}: no such backup file")
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        _sqlite_copy(str(source), _sqlite_path(database_url))
        return
    # --clean --if-exists: drop what the backup holds first; one transaction, all or nothing.
    _run(
        [_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction",
         f"--dbname={url.database}", str(source)],
        database_url,
    )  # fmt: skip


def _sqlite_copy(source: str, target: str) -> None:
    # sqlite3's context manager only ends a transaction: closing() closes the connections.
    with closing(sqlite3.connect(source)) as origin, closing(sqlite3.connect(target)) as copy:
        origin.backup(copy)


def _sqlite_path(database_url: str) -> str:
    database = make_url(database_url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database has nothing to back up")
    return database


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} not found: install PostgreSQL's client (postgresql-client)")
    return path


def _run(command: list[str], database_url: str) -> None:
    url = make_url(database_url)
    # The password goes through the environment, never the command line (visible in ps).
    env = os.environ | {
        "PGHOST": url.host or "",
        "PGPORT": str(url.port or 5432),
        "PGUSER": url.username or "",
        "PGDATABASE": url.database or "",
    }
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{Path(command[0]).name} failed: {result.stderr.strip()[:2000]}")
