"""Streaming fixtures: a real Kafka broker, Spark's connector jars, a stream environment per test.

The broker runs from scripts/kafka.sh for the whole session (Maven resolves its jars on first
use); each test gets its own topic, PostgreSQL database and SFMLOPS_HOME (checkpoints), and runs
`sfmlops stream` as a real process with Spark local[2].
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from sfmlops.adapters.db import store_records
from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.core import columns
from sfmlops.core.validation import validate_sales
from sfmlops.datasets import ROSSMANN_DIR
from sfmlops.services import loading
from tests.support import ROOT
from tests.support.killable_postgres import KillablePostgres
from tests.support.network import free_port
from tests.support.stream_harness import KafkaBroker, StreamEnv


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A single-node KRaft broker on free loopback ports, removed after the session."""
    yield from _session_broker("sfmlops-kafka-")


@pytest.fixture(scope="session")
def sasl_kafka_broker() -> Iterator[KafkaBroker]:
    """A broker that authenticates clients with SCRAM-SHA-512 and authorizes them by ACL.

    Users: "producer", "stream" and "stranger" (no ACL unless a test grants one).
    """
    yield from _session_broker(
        "sfmlops-kafka-sasl-",
        admin_password=secrets.token_urlsafe(16),
        users={name: secrets.token_urlsafe(16) for name in ("producer", "stream", "stranger")},
    )


def _session_broker(
    prefix: str, admin_password: str | None = None, users: dict[str, str] | None = None
) -> Iterator[KafkaBroker]:
    """A broker in a fresh folder named `prefix`*, started, then stopped and removed."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    broker = KafkaBroker(
        home=home,
        port=free_port(),
        controller_port=free_port(),
        admin_password=admin_password,
        users=users or {},
    )
    try:
        broker.start()
    except subprocess.CalledProcessError as error:
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"Kafka ({home}) did not start: {error.stderr}")
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def jars_dir() -> Path:
    """Spark's Kafka connector, resolved by Maven into the user's jar cache (a no-op when there)."""
    folder = Path(os.environ.get("SFMLOPS_JARS_DIR", Path.home() / ".cache" / "sfmlops" / "jars"))
    subprocess.run(
        [
            str(ROOT / "scripts" / "fetch-jars.sh"),
            "spark-connectors",
            str(folder / "spark-connectors"),
        ],
        check=True,
        timeout=900,
    )
    return folder


@pytest.fixture
def stream_env(
    kafka_broker: KafkaBroker,
    jars_dir: Path,
    postgres_url: str,
    rossmann_slice: Path,
    tmp_path: Path,
) -> Iterator[StreamEnv]:
    """A fresh topic and a migrated PostgreSQL database holding the slice's 20 stores."""
    yield from _stream_env(kafka_broker, jars_dir, postgres_url, rossmann_slice, tmp_path)


@pytest.fixture
def stream_env_own_postgres(
    kafka_broker: KafkaBroker,
    jars_dir: Path,
    own_postgres: KillablePostgres,
    rossmann_slice: Path,
    tmp_path: Path,
) -> Iterator[StreamEnv]:
    """Like `stream_env`, on the test's own PostgreSQL cluster (`own_postgres`), which the test
    may kill."""
    yield from _stream_env(kafka_broker, jars_dir, own_postgres.url, rossmann_slice, tmp_path)


@pytest.fixture(scope="session")
def store_history() -> pd.DataFrame:
    """18,800 distinct canonical sales records of stores 1..20 (the slice's stores).

    The bundled data has 17,512 days for them; a second product per store fills up the rest.
    """
    raw = pd.read_csv(ROSSMANN_DIR / "train.csv.gz", dtype=str, keep_default_na=False)
    raw = raw[raw["Store"].astype(int) <= 20].rename(columns=columns.ROSSMANN_SALES_COLUMNS)
    validated = validate_sales(raw, range(1, 21))
    assert validated.ok
    totals = validated.valid.reset_index(drop=True)
    second = totals.head(18_800 - len(totals)).assign(
        **{columns.PRODUCT_ID: "sku-2", columns.SALES: lambda f: (f[columns.SALES] / 2).round(2)}
    )
    return pd.concat([totals, second], ignore_index=True)


@pytest.fixture
def sasl_stream_env(
    sasl_kafka_broker: KafkaBroker,
    jars_dir: Path,
    postgres_url: str,
    rossmann_slice: Path,
    tmp_path: Path,
) -> Iterator[StreamEnv]:
    """Like `stream_env`, on the SASL broker; `sfmlops` commands run without credentials
    unless a test passes a user's (`sasl_kafka_broker.client_env`)."""
    yield from _stream_env(sasl_kafka_broker, jars_dir, postgres_url, rossmann_slice, tmp_path)


def _stream_env(
    broker: KafkaBroker, jars_dir: Path, postgres_url: str, rossmann_slice: Path, tmp_path: Path
) -> Iterator[StreamEnv]:
    """A fresh topic on `broker` and a migrated database holding the slice's stores."""
    engine = make_engine(postgres_url)
    migrate(engine)
    with engine.begin() as connection:
        store_records.upsert_stores(connection, loading.read_dataset(rossmann_slice).stores)
    yield StreamEnv(
        broker=broker,
        database_url=postgres_url,
        home=tmp_path / "home",
        topic=f"sales.test.{uuid.uuid4().hex[:8]}",
        jars_dir=jars_dir,
        engine=engine,
    )
    engine.dispose()
