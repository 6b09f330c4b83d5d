"""Kafka → Spark → PostgreSQL, end to end: exact results through bad records, crashes and restarts."""

from __future__ import annotations

import json
import re
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import make_url, text

from sfmlops.adapters import kafka
from sfmlops.adapters.db import stream_offset_records
from sfmlops.adapters.db.engine import make_engine
from sfmlops.core import columns, events
from tests.support.killable_postgres import KillablePostgres
from tests.support.stream_harness import StreamEnv, kill_if_running
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Events:
    """Events to send, with what must come out of them."""

    keys: list[bytes]
    values: list[bytes]
    expected_sales: pd.DataFrame
    malformed: dict[str, str]  # payload -> fragment of the reason it must be refused with


def mixed_events(history: pd.DataFrame, malformed_share: float, duplicate_share: float) -> Events:
    """`history` as events plus malformed ones and exact re-sends, shuffled (seeded).

    The total is len(history) / (1 - malformed_share - duplicate_share) events.
    """
    total = round(len(history) / (1 - malformed_share - duplicate_share))
    keys, values = events.encode_sales_events(history)
    rng = np.random.default_rng(6)
    duplicates = rng.choice(len(values), size=round(total * duplicate_share), replace=False)
    malformed: dict[str, str] = {}
    sample = history.sample(n=round(total * malformed_share), random_state=6)
    for number, record in enumerate(sample.to_dict("records")):
        event = {
            "schema_version": 1,
            **record,
            columns.SALES_DATE: record[columns.SALES_DATE].strftime("%Y-%m-%d"),
            columns.CUSTOMERS: None
            if pd.isna(record[columns.CUSTOMERS])
            else int(record[columns.CUSTOMERS]),
        }
        kind = number % 4
        if kind == 0:
            payload, reason = json.dumps(event)[: -5 - number % 7], "not a JSON object"
        elif kind == 1:
            del event[columns.SALES]
            payload, reason = json.dumps(event), "sales: missing value"
        elif kind == 2:
            event[columns.SALES] = -1.0 - number
            payload, reason = json.dumps(event), "sales: must be >= 0"
        else:
            event[columns.STORE_ID] = 900 + number
            payload, reason = json.dumps(event), "store_id: unknown store"
        malformed[payload] = reason
    all_keys = keys + [keys[i] for i in duplicates] + [b"1"] * len(malformed)
    all_values = values + [values[i] for i in duplicates] + [p.encode() for p in malformed]
    order = rng.permutation(len(all_values))
    return Events(
        keys=[all_keys[i] for i in order],
        values=[all_values[i] for i in order],
        expected_sales=history,
        malformed=malformed,
    )


def normalized(sales: pd.DataFrame) -> pd.DataFrame:
    frame = (
        sales[list(columns.SALES_COLUMNS)]
        .sort_values(list(columns.SALES_KEY))
        .reset_index(drop=True)
    )
    return frame.astype(
        {
            columns.STORE_ID: "int64",
            columns.PRODUCT_ID: str,
            columns.SALES: "float64",
            columns.CUSTOMERS: "Int64",
            columns.OPEN: "int64",
            columns.PROMO: "int64",
            columns.STATE_HOLIDAY: str,
            columns.SCHOOL_HOLIDAY: "int64",
        }
    )


def assert_exact(env: StreamEnv, expected: Events) -> None:
    pd.testing.assert_frame_equal(normalized(env.sales()), normalized(expected.expected_sales))
    letters = env.dead_letters()
    assert len(letters) == len(expected.malformed)
    assert set(letters["payload"]) == set(expected.malformed)
    for payload, reason in zip(letters["payload"], letters["reason"], strict=True):
        assert expected.malformed[payload] in reason, (payload, reason)
    assert (letters["source"] == "kafka").all()
    assert (letters["kafka_topic"] == env.topic).all()
    assert not letters.duplicated(["kafka_partition", "kafka_offset"]).any()


def test_twenty_thousand_events_with_bad_and_repeated_ones_land_exactly(
    stream_env: StreamEnv, store_history: pd.DataFrame
) -> None:
    sent = mixed_events(store_history, malformed_share=0.01, duplicate_share=0.05)
    assert len(sent.values) == 20_000
    stream_env.send(sent.keys, sent.values)

    result = stream_env.run("stream", "--once")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Done: 20,000 records" in result.stdout
    assert "200 dead-lettered." in result.stdout
    assert_exact(stream_env, sent)


def test_a_killed_stream_restarts_without_losing_or_repeating_a_record(
    stream_env: StreamEnv, store_history: pd.DataFrame
) -> None:
    history = store_history.sample(n=9_000, random_state=2)
    sent = mixed_events(history, malformed_share=0.01, duplicate_share=0.05)
    stream_env.send(sent.keys, sent.values)
    stream_env.extra_env["SFMLOPS_STREAM_MAX_BATCH_EVENTS"] = "2000"

    # 1. Killed inside batch 1's transaction after Spark has already counted batch 1 as done
    #    in its checkpoint: the database, which resumes the next run, is one batch behind.
    crashed = stream_env.run("stream", "--once", SFMLOPS_STREAM_FAULT_BEFORE_COMMIT="1")
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert "batch 0:" in crashed.stdout
    assert "batch 1:" not in crashed.stdout
    after_batch_zero = len(stream_env.sales())
    assert 0 < after_batch_zero < len(history)

    # 2. Killed by the test hook right after a commit.
    crashed = stream_env.run("stream", "--once", SFMLOPS_STREAM_FAULT_AFTER_COMMIT="1")
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert "batch 1:" in crashed.stdout
    assert "batch 2:" not in crashed.stdout
    assert after_batch_zero < len(stream_env.sales()) < len(history)

    # 3. Killed from outside (process group: Python and Spark's JVM) in the middle of a run.
    running = stream_env.start("stream", "--continuous", "--interval", "500ms")
    before = len(stream_env.sales())
    try:
        wait_until(
            lambda: len(stream_env.sales()) > before, timeout=180, what="a batch after restart"
        )
    finally:
        kill_if_running(running)
    assert running.returncode == -signal.SIGKILL

    # 4. A plain restart finishes the topic: every record once, none lost.
    finished = stream_env.run("stream", "--once")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert_exact(stream_env, sent)

    # 5. A lost checkpoint loses nothing: the database says where to resume.
    shutil.rmtree(stream_env.home / "checkpoints")
    resumed = stream_env.run("stream", "--once")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Done: 0 records" in resumed.stdout
    assert_exact(stream_env, sent)

    # 6. Replaying the whole topic from the earliest offset: still exact.
    replayed = stream_env.run("stream", "--once", "--from-earliest")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert f"Done: {len(sent.values):,} records" in replayed.stdout
    assert_exact(stream_env, sent)


def test_a_broker_restart_mid_run_loses_and_repeats_nothing(
    stream_env: StreamEnv, store_history: pd.DataFrame
) -> None:
    history = store_history.sample(n=4_000, random_state=3)
    sent = mixed_events(history, malformed_share=0.01, duplicate_share=0.05)
    half = len(sent.values) // 2
    stream_env.send(sent.keys[:half], sent.values[:half])
    running = stream_env.start("stream", "--continuous", "--interval", "1s")
    try:
        wait_until(lambda: len(stream_env.sales()) > 0, timeout=180, what="the first half to land")
        stream_env.broker.stop()
        # The idempotent producer keeps retrying while the broker is down.
        producer = kafka.make_producer(stream_env.broker.bootstrap_servers)
        sender = threading.Thread(
            target=kafka.send,
            args=(producer, stream_env.topic, sent.keys[half:], sent.values[half:]),
        )
        sender.start()
        stream_env.broker.start()
        sender.join(timeout=120)
        assert not sender.is_alive()
        wait_until(
            lambda: (
                len(stream_env.sales()) == len(history)
                and len(stream_env.dead_letters()) == len(sent.malformed)
            ),
            timeout=180,
            what="every record after the broker restart",
        )
    finally:
        running.send_signal(signal.SIGTERM)
        output, _ = running.communicate(timeout=60)
    assert running.returncode == 0, output
    assert_exact(stream_env, sent)


def test_a_database_killed_inside_a_batch_loses_and_repeats_nothing(
    stream_env_own_postgres: StreamEnv,
    own_postgres: KillablePostgres,
    store_history: pd.DataFrame,
) -> None:
    env = stream_env_own_postgres
    history = store_history.sample(n=3_000, random_state=4)
    mixed = mixed_events(history, malformed_share=0.01, duplicate_share=0.05)
    # Corrections of 100 records of open days, sent last: each key ends with its new value.
    corrected = (
        history[history[columns.SALES] > 0]
        .sample(n=100, random_state=5)
        .assign(**{columns.SALES: lambda f: f[columns.SALES] + 1.0})
    )
    keys, values = events.encode_sales_events(corrected)
    sent = Events(
        keys=mixed.keys + keys,
        values=mixed.values + values,
        expected_sales=pd.concat([history.drop(corrected.index), corrected]),
        malformed=mixed.malformed,
    )
    half = len(mixed.values) // 2
    env.extra_env["SFMLOPS_STREAM_MAX_BATCH_EVENTS"] = "1000"
    env.send(sent.keys[:half], sent.values[:half])
    running = env.start("stream", "--continuous", "--interval", "1s")
    try:
        wait_until(lambda: len(env.sales()) > 0, timeout=180, what="a first batch to commit")
        # Holding a lock the batch's offset write needs pins the job inside its transaction,
        # its sales already upserted, until PostgreSQL dies under it.
        blocker = env.engine.connect()
        blocker.execute(text("LOCK TABLE stream_offsets IN SHARE MODE"))
        env.send(sent.keys[half:], sent.values[half:])
        wait_until(
            lambda: _waiting_on_a_lock(env, "stream_offsets"),
            timeout=120,
            what="a batch waiting to write its offsets",
        )
        own_postgres.kill()
        blocker.invalidate()
        # The job stops with an error (its supervisor restarts it); it does not hang.
        output, _ = running.communicate(timeout=120)
    finally:
        kill_if_running(running)
    assert running.returncode == 1, output
    # One line says what failed and where; Spark's and Python's stack traces go to the log.
    failure = re.search(
        r"^error: the stream stopped: (writing batch \d+ to|reading the stores of batch \d+ "
        r"from) the database at postgresql\S+ failed: .+ \(OperationalError\) "
        r"\(details in (\S+)\)$",
        output,
        re.MULTILINE,
    )
    assert failure, output
    assert "Traceback" not in output, output
    assert "\tat org.apache.spark" not in output, output
    details = Path(failure[2]).read_text()
    if failure[1].startswith("reading"):
        # Inside Spark's batch: the query fails, and Spark reports it.
        assert "terminated with error" in details
    # A failed write (on the job's writer thread) stops the query without a report of Spark's.
    assert "psycopg2.OperationalError" in details  # Python's traceback of the database error
    own_postgres.restart()
    assert 0 < len(env.sales()) < len(history)
    with env.engine.connect() as connection:
        committed = stream_offset_records.read_stream_offsets(connection, env.topic)

    # The restart its supervisor makes: it waits for the database and resumes after the last
    # committed batch.
    restarted = env.run("stream", "--once", "--wait", "60")

    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    # It read exactly the events after the committed offsets: none again, none skipped.
    assert f"Done: {len(sent.values) - sum(committed.values()):,} records" in restarted.stdout
    assert_exact(env, sent)


def test_a_write_the_database_refuses_stops_a_continuous_job_with_no_further_events(
    stream_env: StreamEnv, store_history: pd.DataFrame
) -> None:
    env = stream_env
    history = store_history.sample(n=1_001, random_state=7)
    keys, values = events.encode_sales_events(history)
    running = env.start("stream", "--continuous", "--interval", "1s")
    try:
        env.send(keys[:-1], values[:-1])
        wait_until(lambda: len(env.sales()) == len(history) - 1, timeout=180, what="1,000 records")
        # The database now refuses sales rows (as a revoked grant or a full disk would), and one
        # last event arrives: its batch fails on the writer's thread and no batch follows it.
        with env.engine.begin() as connection:
            for statement in REFUSE_SALES:
                connection.execute(text(statement))
        env.send(keys[-1:], values[-1:])
        # The job stops on that failure (its supervisor restarts it); it does not wait for a
        # next batch that a quiet topic may never bring.
        output, _ = running.communicate(timeout=120)
    finally:
        kill_if_running(running)
    assert running.returncode == 1, output
    assert re.search(
        r"^error: the stream stopped: writing batch \d+ to the database at postgresql\S+ failed: "
        r"sales are refused \(RaiseException\)",
        output,
        re.MULTILINE,
    ), output
    assert len(env.sales()) == len(history) - 1
    with env.engine.begin() as connection:
        connection.execute(text("DROP TRIGGER refuse_sales ON sales"))

    restarted = env.run("stream", "--once")

    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    # The refused batch was not committed: the restart reads exactly its one event.
    assert "Done: 1 records" in restarted.stdout, restarted.stdout
    pd.testing.assert_frame_equal(normalized(env.sales()), normalized(history))
    assert env.dead_letters().empty


REFUSE_SALES = (
    "CREATE FUNCTION refuse_sales() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN RAISE EXCEPTION 'sales are refused'; END $$",
    "CREATE TRIGGER refuse_sales BEFORE INSERT OR UPDATE ON sales"
    " FOR EACH ROW EXECUTE FUNCTION refuse_sales()",
)


def _waiting_on_a_lock(env: StreamEnv, table: str) -> bool:
    """Whether another session of the database waits for a lock in a statement on `table`."""
    with env.engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND wait_event_type = 'Lock' AND query LIKE :statement"
            ),
            {"statement": f"%{table}%"},
        ).scalar_one()
    return bool(waiting)


def test_out_of_order_and_corrected_records_end_with_the_latest_value_even_after_a_restore(
    stream_env: StreamEnv, postgres_server: str, tmp_path: Path
) -> None:
    def event(store: int, day: str, sales: float) -> tuple[bytes, bytes]:
        record = {
            "schema_version": 1, columns.STORE_ID: store, columns.SALES_DATE: day, columns.SALES: sales,
            columns.CUSTOMERS: 10, columns.OPEN: 1, columns.PROMO: 0, columns.STATE_HOLIDAY: "0", columns.SCHOOL_HOLIDAY: 0,
        }  # fmt: skip
        return str(store).encode(), json.dumps(record).encode()

    def send(sent: list[tuple[bytes, bytes]]) -> None:
        stream_env.send([k for k, _ in sent], [v for _, v in sent])

    def stored() -> dict[tuple[int, pd.Timestamp], float]:
        sales = stream_env.sales().set_index([columns.STORE_ID, columns.SALES_DATE])
        return sales[columns.SALES].to_dict()

    first = [
        event(1, "2015-06-10", 100.0),
        event(1, "2015-06-08", 80.0),  # an earlier day after a later one
        event(1, "2015-06-10", 110.0),  # corrected in the same batch
        event(1, "2015-06-08", 85.0),  # corrected in a later batch
        event(1, "2015-06-09", 90.0),
        event(1, "2015-06-10", 120.0),  # corrected again
        event(2, "2015-06-01", 5.0),
        event(2, "2015-06-01", -1.0),  # an invalid correction changes nothing
    ]
    send(first)
    stream_env.extra_env["SFMLOPS_STREAM_MAX_BATCH_EVENTS"] = "3"
    assert stream_env.run("stream", "--once").returncode == 0
    after_first = {
        (1, pd.Timestamp("2015-06-08")): 85.0,
        (1, pd.Timestamp("2015-06-09")): 90.0,
        (1, pd.Timestamp("2015-06-10")): 120.0,
        (2, pd.Timestamp("2015-06-01")): 5.0,
    }
    backup_file = tmp_path / "backups" / "sales.dump"
    backed_up = stream_env.run("backup", str(backup_file))
    assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr

    late = [event(1, "2015-06-10", 130.0), event(2, "2015-05-31", 4.0)]
    send(late)
    result = stream_env.run("stream", "--once")

    assert result.returncode == 0, result.stdout + result.stderr
    after_late = after_first | {
        (1, pd.Timestamp("2015-06-10")): 130.0,
        (2, pd.Timestamp("2015-05-31")): 4.0,
    }
    assert stored() == after_late
    assert stream_env.dead_letters()["reason"].tolist() == ["sales: must be >= 0"]

    # The restore drill. The database is lost after the late batch committed, while events
    # keep arriving; the backup from before that batch comes back, the late batch's correction
    # rolled back with it, and Spark's checkpoint still says the late batch is done.
    _destroy_database(stream_env, postgres_server)
    send([event(2, "2015-06-02", 6.0)])
    restored = stream_env.run("restore", str(backup_file), "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert stored() == after_first

    resumed = stream_env.run("stream", "--once")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # It read exactly the events after the restored offsets: the late ones again, then the
    # newer one; none of the first events twice, none skipped.
    assert "Done: 3 records" in resumed.stdout, resumed.stdout
    assert stored() == after_late | {(2, pd.Timestamp("2015-06-02")): 6.0}
    assert stream_env.dead_letters()["reason"].tolist() == ["sales: must be >= 0"]


def _destroy_database(env: StreamEnv, server_url: str) -> None:
    """Drop the test's database and create it again, empty (no tables, no offsets)."""
    env.engine.dispose()
    name = make_url(env.database_url).database
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
