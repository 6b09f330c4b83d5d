"""Reads and writes of the sales database (the only module that issues SQL for them).

Every function takes an open `Connection`, so the caller decides the transaction:
a file load writes stores and sales in one transaction and leaves nothing on failure.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import Column, Connection, MetaData, Table, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql.dml import Insert

from sfmlops.adapters.db.tables import (
    forecasts,
    ingest_dead_letters,
    sales,
    stores,
    stream_offsets,
    training_jobs,
)
from sfmlops.core import columns as c

ProgressCallback = Callable[[int], None]
"""Called with the number of rows just written, for progress bars."""

_SALES_VALUE_COLUMNS = [name for name in c.SALES_COLUMNS if name not in c.SALES_KEY]
_CHUNK_ROWS = 100_000
TRAINING_JOB_STATUSES = ("queued", "running", "succeeded", "failed")
_UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE


@dataclass(frozen=True)
class SalesSummary:
    """What the sales table holds."""

    stores: int
    series: int
    rows: int
    first_date: dt.date | None
    last_date: dt.date | None


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be ingested, kept with the reason."""

    source: str
    payload: str
    reason: str
    kafka_topic: str | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None


def upsert_stores(connection: Connection, frame: pd.DataFrame) -> int:
    """Insert or update store metadata (columns `columns.STORE_COLUMNS`); returns rows written."""
    if frame.empty:
        return 0
    rows = _records(frame[list(c.STORE_COLUMNS)])
    statement = _insert(connection, stores)
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[stores.c.store_id],
        set_={name: excluded[name] for name in c.STORE_COLUMNS if name != c.STORE_ID}
        | {"updated_at": func.now()},
    )
    connection.execute(statement, rows)
    return len(rows)


def upsert_sales(
    connection: Connection,
    frame: pd.DataFrame,
    on_progress: ProgressCallback | None = None,
) -> int:
    """Insert or update sales rows on their key (store, product, date), idempotently.

    A row whose values are unchanged is left as it is (its `ingested_at` too); when the
    frame repeats a key, the later row wins.

    Args:
        connection: An open connection inside the caller's transaction.
        frame: Canonical sales rows (columns `columns.SALES_COLUMNS`), already validated.
        on_progress: Called after each chunk with the rows it held.

    Returns:
        The number of rows handed to the database.
    """
    if frame.empty:
        return 0
    # Key order makes index inserts append-like instead of random: 2-3x faster on both backends.
    frame = frame.drop_duplicates(list(c.SALES_KEY), keep="last").sort_values(list(c.SALES_KEY))
    if connection.dialect.name == "postgresql":
        _copy_upsert_sales(connection, frame, on_progress)
    else:
        _executemany_upsert_sales(connection, frame, on_progress)
    return len(frame)


def store_ids(connection: Connection) -> set[int]:
    """The ids of every store in the metadata."""
    return set(connection.scalars(select(stores.c.store_id)).all())


def list_stores(connection: Connection) -> pd.DataFrame:
    """Store metadata, one row per store, ordered by id."""
    result = connection.execute(
        select(*[stores.c[name] for name in c.STORE_COLUMNS]).order_by(stores.c.store_id)
    )
    return pd.DataFrame(result.fetchall(), columns=list(c.STORE_COLUMNS))


def get_store(connection: Connection, store_id: int) -> dict[str, Any] | None:
    """One store's metadata, or None when the store does not exist."""
    row = (
        connection.execute(
            select(*[stores.c[name] for name in c.STORE_COLUMNS]).where(
                stores.c.store_id == store_id
            )
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row is not None else None


@dataclass(frozen=True)
class SeriesSpan:
    """One series of a store and the dates its sales cover."""

    product_id: str
    first_date: dt.date
    last_date: dt.date
    rows: int


def store_series(connection: Connection, store_id: int) -> list[SeriesSpan]:
    """The series (products) a store has sales for, with their date ranges."""
    result = connection.execute(
        select(
            sales.c.product_id,
            func.min(sales.c.sales_date),
            func.max(sales.c.sales_date),
            func.count(),
        )
        .where(sales.c.store_id == store_id)
        .group_by(sales.c.product_id)
        .order_by(sales.c.product_id)
    )
    return [
        SeriesSpan(
            product_id=product,
            first_date=_as_date(first) or dt.date.min,
            last_date=_as_date(last) or dt.date.min,
            rows=rows,
        )
        for product, first, last, rows in result
    ]


def count_sales_ingested_since(connection: Connection, since: dt.datetime) -> int:
    """Sales rows inserted or changed since `since`."""
    query = select(func.count()).select_from(sales).where(sales.c.ingested_at >= since)
    return int(connection.execute(query).scalar_one())


def latest_ingested_at(connection: Connection, recent: dt.datetime) -> dt.datetime | None:
    """When the newest sales row was stored (`ingested_at`), or None without sales.

    Looks after `recent` first: a range the BRIN index on PostgreSQL serves, where a plain
    max() reads the whole table; only when nothing is that recent is the whole table read.
    """
    newest = func.max(sales.c.ingested_at)
    value = connection.execute(select(newest).where(sales.c.ingested_at >= recent)).scalar()
    if value is None:
        value = connection.execute(select(newest)).scalar()
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return (stamp if stamp.tzinfo else stamp.tz_localize("UTC")).to_pydatetime()


TRAINING_SCOPES = ("full", "single-store")


def last_finished_training_jobs(connection: Connection) -> dict[tuple[str, str], dt.datetime]:
    """When the latest finished training job of each (status, scope) finished.

    Scope "full" is a job over every store (`stores` NULL), "single-store" a retrain of some.
    """
    full = training_jobs.c.stores.is_(None)
    query = (
        select(training_jobs.c.status, full, func.max(training_jobs.c.finished_at))
        .where(training_jobs.c.finished_at.is_not(None))
        .group_by(training_jobs.c.status, full)
    )
    result = {}
    for status, is_full, finished in connection.execute(query):
        stamp = pd.Timestamp(finished)
        stamp = stamp if stamp.tzinfo else stamp.tz_localize("UTC")
        result[(str(status), TRAINING_SCOPES[0 if is_full else 1])] = stamp.to_pydatetime()
    return result


def count_training_jobs_by_status(connection: Connection) -> dict[str, int]:
    """How many training jobs are in each status."""
    result = connection.execute(
        select(training_jobs.c.status, func.count()).group_by(training_jobs.c.status)
    )
    return {str(status): int(count) for status, count in result}


def create_training_job(
    connection: Connection, job_id: str, runner: str, stores: Sequence[int] | None
) -> None:
    """Record a queued training job (`stores` None means every store)."""
    connection.execute(
        training_jobs.insert().values(
            id=job_id,
            status="queued",
            runner=runner,
            # Set here, not by the server: SQLite's CURRENT_TIMESTAMP has whole seconds only.
            created_at=dt.datetime.now(dt.UTC),
            stores=None if stores is None else json.dumps(sorted(int(s) for s in stores)),
        )
    )


def update_training_job(connection: Connection, job_id: str, **fields: Any) -> None:
    """Change fields of a training job (status, progress_done, mlflow_run_id, ...)."""
    unknown = set(fields) - set(training_jobs.c.keys())
    if unknown:
        raise ValueError(f"training_jobs has no column(s) {sorted(unknown)}")
    connection.execute(training_jobs.update().where(training_jobs.c.id == job_id).values(**fields))


def get_training_job(connection: Connection, job_id: str) -> dict[str, Any] | None:
    """One training job as a dict of its columns (`stores` decoded), or None."""
    row = (
        connection.execute(select(training_jobs).where(training_jobs.c.id == job_id))
        .mappings()
        .one_or_none()
    )
    return _job(row) if row is not None else None


def list_training_jobs(connection: Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The most recent training jobs, newest first."""
    query = (
        select(training_jobs)
        .order_by(training_jobs.c.created_at.desc(), training_jobs.c.id)
        .limit(limit)
    )
    return [_job(row) for row in connection.execute(query).mappings()]


def _job(row: Any) -> dict[str, Any]:
    job = dict(row)
    job["stores"] = None if job["stores"] is None else json.loads(job["stores"])
    return job


def sales_summary(connection: Connection) -> SalesSummary:
    """Counts and date range of the stored sales."""
    row = connection.execute(
        select(
            func.count(func.distinct(sales.c.store_id)),
            func.count(),
            func.min(sales.c.sales_date),
            func.max(sales.c.sales_date),
        )
    ).one()
    series = connection.execute(
        select(func.count()).select_from(
            select(sales.c.store_id, sales.c.product_id).distinct().subquery()
        )
    ).scalar_one()
    return SalesSummary(
        stores=row[0],
        series=series,
        rows=row[1],
        first_date=_as_date(row[2]),
        last_date=_as_date(row[3]),
    )


def latest_sales_date(connection: Connection) -> dt.date | None:
    """The most recent sales date stored, or None when there are no sales."""
    return _as_date(connection.execute(select(func.max(sales.c.sales_date))).scalar_one())


def read_sales(
    connection: Connection,
    store_ids: Sequence[int] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    product_id: str | None = None,
) -> pd.DataFrame:
    """Sales history as the canonical frame, filtered by store, product and inclusive dates."""
    query = select(*[sales.c[name] for name in c.SALES_COLUMNS])
    if store_ids is not None:
        query = query.where(sales.c.store_id.in_(list(store_ids)))
    if product_id is not None:
        query = query.where(sales.c.product_id == product_id)
    if start is not None:
        query = query.where(sales.c.sales_date >= start)
    if end is not None:
        query = query.where(sales.c.sales_date <= end)
    query = query.order_by(sales.c.store_id, sales.c.product_id, sales.c.sales_date)
    frame = pd.DataFrame(connection.execute(query).fetchall(), columns=list(c.SALES_COLUMNS))
    frame[c.SALES_DATE] = pd.to_datetime(frame[c.SALES_DATE])
    return frame


def add_dead_letters(connection: Connection, letters: Iterable[DeadLetter]) -> int:
    """Keep rejected records with their reasons; returns how many were handed over.

    A Kafka record (topic, partition, offset) already kept is skipped, so a re-delivered
    micro-batch adds no second copy.
    """
    rows = [letter.__dict__ for letter in letters]
    if rows:
        statement = _insert(connection, ingest_dead_letters).on_conflict_do_nothing(
            index_elements=[
                ingest_dead_letters.c.kafka_topic,
                ingest_dead_letters.c.kafka_partition,
                ingest_dead_letters.c.kafka_offset,
            ]
        )
        connection.execute(statement, rows)
    return len(rows)


def count_dead_letters(connection: Connection, since: dt.datetime | None = None) -> int:
    """Dead letters received since `since` (all when None)."""
    query = select(func.count()).select_from(ingest_dead_letters)
    if since is not None:
        query = query.where(ingest_dead_letters.c.received_at >= since)
    return int(connection.execute(query).scalar_one())


def list_dead_letters(
    connection: Connection,
    limit: int = 50,
    source: str | None = None,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """The newest dead letters first: id, source, payload, reason, Kafka position, received_at.

    Args:
        connection: The sales database.
        limit: Most letters returned.
        source: Only letters from this source (e.g. "api", "kafka").
        before_id: Only letters older than this id (the next page after a listing).
    """
    query = select(ingest_dead_letters).order_by(ingest_dead_letters.c.id.desc()).limit(limit)
    if source is not None:
        query = query.where(ingest_dead_letters.c.source == source)
    if before_id is not None:
        query = query.where(ingest_dead_letters.c.id < before_id)
    return [dict(row) for row in connection.execute(query).mappings()]


def read_stream_offsets(connection: Connection, topic: str) -> dict[int, int]:
    """Per partition of `topic`, the offset the stream job resumes from (absent: never read)."""
    query = select(stream_offsets.c.kafka_partition, stream_offsets.c.next_offset).where(
        stream_offsets.c.kafka_topic == topic
    )
    return {int(partition): int(offset) for partition, offset in connection.execute(query)}


def write_stream_offsets(connection: Connection, topic: str, next_offsets: dict[int, int]) -> None:
    """Record where the stream job resumes, inside the transaction that applied the records."""
    if not next_offsets:
        return
    statement = _insert(connection, stream_offsets)
    statement = statement.on_conflict_do_update(
        index_elements=[stream_offsets.c.kafka_topic, stream_offsets.c.kafka_partition],
        set_={"next_offset": statement.excluded.next_offset, "updated_at": func.now()},
    )
    connection.execute(
        statement,
        [
            {"kafka_topic": topic, "kafka_partition": partition, "next_offset": offset}
            for partition, offset in sorted(next_offsets.items())
        ],
    )


def sales_rows_per_store(connection: Connection, sales_date: dt.date) -> dict[int, int]:
    """Sales rows stored for one day, by store (stores without a row are absent)."""
    query = (
        select(sales.c.store_id, func.count())
        .where(sales.c.sales_date == sales_date)
        .group_by(sales.c.store_id)
    )
    return {int(store_id): int(rows) for store_id, rows in connection.execute(query)}


def series_keys(connection: Connection) -> set[tuple[int, str]]:
    """Every (store_id, product_id) series that has sales."""
    query = select(sales.c.store_id, sales.c.product_id).distinct()
    return {(int(store_id), str(product)) for store_id, product in connection.execute(query)}


def forecast_days_per_series(
    connection: Connection, model_version: str
) -> dict[tuple[int, str], tuple[int, dt.date | None]]:
    """For one model version: per series, how many distinct days are forecast and the first one."""
    query = (
        select(
            forecasts.c.store_id,
            forecasts.c.product_id,
            func.count(func.distinct(forecasts.c.forecast_date)),
            func.min(forecasts.c.forecast_date),
        )
        .where(forecasts.c.model_version == model_version)
        .group_by(forecasts.c.store_id, forecasts.c.product_id)
    )
    return {
        (int(store_id), str(product)): (int(days), _as_date(first))
        for store_id, product, days, first in connection.execute(query)
    }


FORECAST_VALUE_COLUMNS = c.FORECAST_VALUES


def write_forecasts(
    connection: Connection, frame: pd.DataFrame, model_version: str, created_at: dt.datetime
) -> int:
    """Store one pipeline run's forecasts (`columns.FORECAST_COLUMNS`) under a model version.

    Rerunning a version's forecasts replaces its rows; all rows get `created_at`, which
    marks them as one run for `latest_forecasts`.
    """
    rows = [
        {
            c.STORE_ID: int(store_id),
            c.PRODUCT_ID: str(product_id),
            "forecast_date": pd.Timestamp(day).date(),
            "model_version": model_version,
            "created_at": created_at,
            **{
                name: float(value)
                for name, value in zip(FORECAST_VALUE_COLUMNS, values, strict=True)
            },
        }
        for store_id, product_id, day, *values in frame[
            [c.STORE_ID, c.PRODUCT_ID, c.DATE, *FORECAST_VALUE_COLUMNS]
        ].itertuples(index=False)
    ]
    if rows:
        statement = _insert(connection, forecasts)
        key = [
            forecasts.c[name]
            for name in (c.STORE_ID, c.PRODUCT_ID, "forecast_date", "model_version")
        ]
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=key,
                set_={
                    name: statement.excluded[name]
                    for name in (*FORECAST_VALUE_COLUMNS, "created_at")
                },
            ),
            rows,
        )
    return len(rows)


def latest_forecasts(
    connection: Connection, store_id: int | None = None, product_id: str | None = None
) -> pd.DataFrame:
    """The rows of the most recent pipeline run (of the given series, when filtered).

    Columns: `store_id`, `product_id`, `date`, the `yhat*` columns, `model_version`,
    `created_at`; ordered by series and date. Empty when nothing was forecast yet.
    """
    latest = select(func.max(forecasts.c.created_at))
    query = select(
        forecasts.c.store_id,
        forecasts.c.product_id,
        forecasts.c.forecast_date,
        *[forecasts.c[name] for name in FORECAST_VALUE_COLUMNS],
        forecasts.c.model_version,
        forecasts.c.created_at,
    )
    if store_id is not None:
        query = query.where(forecasts.c.store_id == store_id)
        latest = latest.where(forecasts.c.store_id == store_id)
    if product_id is not None:
        query = query.where(forecasts.c.product_id == product_id)
        latest = latest.where(forecasts.c.product_id == product_id)
    query = query.where(forecasts.c.created_at == latest.scalar_subquery()).order_by(
        forecasts.c.store_id, forecasts.c.product_id, forecasts.c.forecast_date
    )
    names = [
        c.STORE_ID,
        c.PRODUCT_ID,
        c.DATE,
        *FORECAST_VALUE_COLUMNS,
        "model_version",
        "created_at",
    ]
    frame = pd.DataFrame(connection.execute(query).fetchall(), columns=names)
    frame[c.DATE] = pd.to_datetime(frame[c.DATE])
    return frame


def dead_letter_payload(record: dict[str, Any]) -> str:
    """A record as JSON text for the dead-letter table (dates and numpy values included)."""
    return json.dumps(record, default=str, sort_keys=True)


def _insert(connection: Connection, table: Table) -> Any:
    """The dialect's INSERT, which offers ON CONFLICT on both backends."""
    module = postgresql if connection.dialect.name == "postgresql" else sqlite
    return module.insert(table)


def _sales_upsert(statement: Any) -> Insert:
    excluded = statement.excluded
    changed = or_(
        *[sales.c[name].is_distinct_from(excluded[name]) for name in _SALES_VALUE_COLUMNS]
    )
    return statement.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[sales.c[name] for name in c.SALES_KEY],
        set_={name: excluded[name] for name in _SALES_VALUE_COLUMNS} | {"ingested_at": func.now()},
        where=changed,
    )


def _executemany_upsert_sales(
    connection: Connection, frame: pd.DataFrame, on_progress: ProgressCallback | None
) -> None:
    # One compiled statement and plain tuples: per-row ORM or per-dict binding would cost
    # several times the database's own work on a million rows.
    compiled = _sales_upsert(sqlite.insert(sales)).compile(
        dialect=connection.dialect,
        column_keys=list(c.SALES_COLUMNS),
    )
    order = list(compiled.positiontup or [])
    if sorted(order) != sorted(c.SALES_COLUMNS):
        raise RuntimeError(f"unexpected parameters in the sales upsert: {order}")
    with _driver_cursor(connection, str(compiled)) as cursor:
        for chunk in _chunks(frame):
            cursor.executemany(str(compiled), _tuples(chunk, order))
            if on_progress:
                on_progress(len(chunk))


def _copy_upsert_sales(
    connection: Connection, frame: pd.DataFrame, on_progress: ProgressCallback | None
) -> None:
    progress = _Progress(on_progress)
    # Most frames hold only new keys (a stream's new days, a first load): COPY straight into
    # sales writes them in about 40 % less time and WAL than staging and merging them
    # (benchmarks/postgres_upsert.py). A key already stored fails that COPY on the primary key
    # (at once when the frame is a replay: ~0.1 s per 200k rows); the savepoint undoes it and
    # the frame takes the merge path. A concurrent writer's insert of one of the keys fails it
    # the same way, so nothing is lost or written twice. PostgreSQL logs each such failure.
    try:
        with connection.begin_nested():
            _copy(connection, "sales", frame, progress)
        return
    except IntegrityError as error:
        if getattr(error.orig, "pgcode", None) != _UNIQUE_VIOLATION:
            raise
    # COPY into a transaction-scoped staging table, then one merge statement: ON CONFLICT
    # leaves unchanged rows alone and, unlike MERGE, is safe against concurrent inserts.
    staging = Table(
        "sales_staging",
        MetaData(),
        *[Column(name, sales.c[name].type) for name in c.SALES_COLUMNS],
    )
    connection.exec_driver_sql(
        "CREATE TEMPORARY TABLE IF NOT EXISTS sales_staging "
        "(LIKE sales INCLUDING DEFAULTS) ON COMMIT DROP; TRUNCATE sales_staging"
    )
    _copy(connection, "sales_staging", frame, progress)
    merge = _sales_upsert(
        postgresql.insert(sales).from_select(list(c.SALES_COLUMNS), select(*staging.c))
    )
    connection.execute(merge)


def _copy(connection: Connection, table: str, frame: pd.DataFrame, progress: _Progress) -> None:
    """COPY the frame's sales columns into `table`, chunk by chunk."""
    copy_sql = f"COPY {table} ({', '.join(c.SALES_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
    with _driver_cursor(connection, copy_sql) as cursor:
        written = 0
        for chunk in _chunks(frame):
            cursor.copy_expert(copy_sql, _csv_buffer(chunk[list(c.SALES_COLUMNS)]))
            written += len(chunk)
            progress.reached(written)


class _Progress:
    """Forwards rows written to a callback, once each, however often a frame is rewritten."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.reported = 0

    def reached(self, rows: int) -> None:
        if self.callback is not None and rows > self.reported:
            self.callback(rows - self.reported)
        self.reported = max(self.reported, rows)


@contextmanager
def _driver_cursor(connection: Connection, statement: str) -> Iterator[Any]:
    """A DBAPI cursor inside the connection's transaction, for bulk paths SQLAlchemy lacks.

    Driver errors come out as SQLAlchemy's (IntegrityError, OperationalError, ...), as they
    would from `Connection.execute`.
    """
    dbapi = connection.dialect.loaded_dbapi
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except dbapi.Error as error:
        raise DBAPIError.instance(statement, None, error, dbapi.Error) from error
    finally:
        cursor.close()


def _csv_buffer(frame: pd.DataFrame) -> io.BytesIO:
    """The frame as headerless CSV for COPY: dates as YYYY-MM-DD, missing values empty.

    Arrow's CSV writer is several times faster than DataFrame.to_csv on a million rows.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if pa.types.is_timestamp(table.schema.field(c.SALES_DATE).type):
        position = table.schema.get_field_index(c.SALES_DATE)
        table = table.set_column(
            position, c.SALES_DATE, table.column(c.SALES_DATE).cast(pa.date32())
        )
    buffer = io.BytesIO()
    pa_csv.write_csv(
        table, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    )
    buffer.seek(0)
    return buffer


def _chunks(frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), _CHUNK_ROWS):
        yield frame.iloc[start : start + _CHUNK_ROWS]


def _tuples(chunk: pd.DataFrame, order: Sequence[str]) -> list[tuple[Any, ...]]:
    values = []
    for name in order:
        column = chunk[name]
        if name == c.SALES_DATE:
            values.append(column.dt.strftime("%Y-%m-%d").tolist())
        else:
            values.append(column.astype(object).where(column.notna(), None).tolist())
    return list(zip(*values, strict=True))


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(key): (None if pd.isna(value) else value) for key, value in row.items()}
        for row in frame.astype(object).to_dict("records")
    ]


def _as_date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))
