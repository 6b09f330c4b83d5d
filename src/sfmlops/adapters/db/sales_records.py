"""Sales records: the upsert (executemany on SQLite, COPY on PostgreSQL) and the reads of `sales`.

Every function takes an open `Connection`, so the caller decides the transaction:
a file load writes stores and sales in one transaction and leaves nothing on failure.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    Table,
    and_,
    case,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql.dml import Insert

from sfmlops.adapters.db.rows import _as_date
from sfmlops.adapters.db.tables import (
    sales,
    sales_extent,
)
from sfmlops.core import columns

ProgressCallback = Callable[[int], None]
"""Called with the number of rows just written, for progress bars."""


_SALES_VALUE_COLUMNS = [name for name in columns.SALES_COLUMNS if name not in columns.SALES_KEY]


_CHUNK_ROWS = 100_000


_UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE


@dataclass(frozen=True)
class SalesSummary:
    """What the sales table holds."""

    stores: int
    series: int
    rows: int
    first_date: dt.date | None
    last_date: dt.date | None


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
    frame = frame.drop_duplicates(list(columns.SALES_KEY), keep="last").sort_values(
        list(columns.SALES_KEY)
    )
    if connection.dialect.name == "postgresql":
        inserted = _copy_upsert_sales(connection, frame, on_progress)
    else:
        inserted = _executemany_upsert_sales(connection, frame, on_progress)
    _extend(connection, inserted, _as_date(frame[columns.SALES_DATE].max()))
    return len(frame)


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


def sales_rows_and_latest_date(connection: Connection) -> tuple[int, dt.date | None]:
    """The number of sales rows and the latest sales date: what a freshness check needs.

    Read from `sales_extent`, which every write keeps current in its own transaction (a
    count and max over `sales` read every row: seconds at 100k series on PostgreSQL).
    """
    row = connection.execute(
        select(sales_extent.c.sales_rows, sales_extent.c.latest_sales_date).where(
            sales_extent.c.id == _EXTENT_ROW
        )
    ).one_or_none()
    if row is None:
        return 0, None
    return int(row[0]), _as_date(row[1])


def latest_sales_date(connection: Connection) -> dt.date | None:
    """The most recent sales date stored, or None when there are no sales."""
    return sales_rows_and_latest_date(connection)[1]


def delete_sales_from(connection: Connection, start: dt.date) -> int:
    """Delete every sales row dated `start` or later (a replay's `--reset`); returns the rows."""
    # The extent first: a concurrent writer's count and date land after this one's.
    _lock_extent(connection)
    result = connection.execute(sales.delete().where(sales.c.sales_date >= start))
    deleted = int(result.rowcount or 0)
    if deleted:
        # The new latest date is whatever is left: one scan, for a reset only.
        latest = connection.execute(select(func.max(sales.c.sales_date))).scalar_one()
        connection.execute(
            sales_extent.update()
            .where(sales_extent.c.id == _EXTENT_ROW)
            .values(sales_rows=sales_extent.c.sales_rows - deleted, latest_sales_date=latest)
        )
    return deleted


# The one row of `sales_extent`.
_EXTENT_ROW = 1


def _extend(connection: Connection, inserted: int, latest: dt.date | None) -> None:
    """Count `inserted` new sales rows and move the latest date up to `latest` (the written
    frame's), in the caller's transaction.

    Updated last, once per write: on PostgreSQL the row stays locked until the transaction
    ends, so concurrent writers wait for each other only at their end.
    """
    current = sales_extent.c.latest_sales_date
    connection.execute(
        sales_extent.update()
        .where(sales_extent.c.id == _EXTENT_ROW)
        .values(
            sales_rows=sales_extent.c.sales_rows + inserted,
            latest_sales_date=case(
                (current.is_(None), latest), (current < latest, latest), else_=current
            ),
        )
    )


def read_sales(
    connection: Connection,
    store_ids: Sequence[int] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    product_id: str | None = None,
) -> pd.DataFrame:
    """Sales history as the canonical frame, filtered by store, product and inclusive dates."""
    query = select(*[sales.c[name] for name in columns.SALES_COLUMNS])
    if store_ids is not None:
        query = query.where(sales.c.store_id.in_(list(store_ids)))
    if product_id is not None:
        query = query.where(sales.c.product_id == product_id)
    if start is not None:
        query = query.where(sales.c.sales_date >= start)
    if end is not None:
        query = query.where(sales.c.sales_date <= end)
    query = query.order_by(sales.c.store_id, sales.c.product_id, sales.c.sales_date)
    # Rows arrive in chunks that become compact frames at once: a whole history as driver
    # rows costs about 600 bytes a row (32.7 M rows of 100k series passed 20 GiB before
    # any frame existed). Within a chunk, equal product ids and holiday codes become one
    # shared string each instead of one object per row.
    result = connection.execution_options(stream_results=True).execute(query)
    names = list(columns.SALES_COLUMNS)
    chunks = [_sales_chunk(rows, names) for rows in result.partitions(READ_CHUNK_ROWS)]
    if not chunks:
        return _sales_chunk([], names)
    return pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]


def read_latest_sales(
    connection: Connection, start: dt.date | None = None, end: dt.date | None = None
) -> pd.DataFrame:
    """Each series' most recent record between `start` and `end` (inclusive; None: unbounded).

    One row per (store, product), ordered by the series key. The database picks the rows: the
    grouped maximum reads only the primary key's index, where `read_sales` would bring every
    stored row to the caller (11 s for the ~1 M rows of the bundled data on PostgreSQL).
    """
    in_range = []
    if start is not None:
        in_range.append(sales.c.sales_date >= start)
    if end is not None:
        in_range.append(sales.c.sales_date <= end)
    latest = (
        select(sales.c.store_id, sales.c.product_id, func.max(sales.c.sales_date).label("latest"))
        .where(*in_range)
        .group_by(sales.c.store_id, sales.c.product_id)
        .subquery()
    )
    query = (
        select(*[sales.c[name] for name in columns.SALES_COLUMNS])
        .join(
            latest,
            and_(
                sales.c.store_id == latest.c.store_id,
                sales.c.product_id == latest.c.product_id,
                sales.c.sales_date == latest.c.latest,
            ),
        )
        .order_by(sales.c.store_id, sales.c.product_id)
    )
    return _sales_chunk(connection.execute(query).all(), list(columns.SALES_COLUMNS))


# Rows per chunk of `read_sales`: a few hundred MiB of driver rows at most.
READ_CHUNK_ROWS = 500_000


def _sales_chunk(rows: Sequence[Any], names: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=names)
    frame[columns.SALES_DATE] = pd.to_datetime(frame[columns.SALES_DATE])
    for name in (columns.PRODUCT_ID, columns.STATE_HOLIDAY):
        if len(frame):
            frame[name] = frame[name].astype("category").astype(object)
    return frame


def read_store_totals(
    connection: Connection, store_id: int, start: dt.date, end: dt.date
) -> pd.DataFrame:
    """A store's daily totals across its products (inclusive dates), as the canonical frame
    with `product_id` `columns.DEFAULT_PRODUCT`: sales and customers summed, open, promo and
    the holidays as on any of its products (the largest value)."""
    query = (
        select(
            sales.c.store_id,
            sales.c.sales_date,
            func.sum(sales.c.sales),
            func.sum(sales.c.customers),
            func.max(sales.c.open),
            func.max(sales.c.promo),
            func.max(sales.c.state_holiday),
            func.max(sales.c.school_holiday),
        )
        .where(sales.c.store_id == store_id, sales.c.sales_date >= start, sales.c.sales_date <= end)
        .group_by(sales.c.store_id, sales.c.sales_date)
        .order_by(sales.c.sales_date)
    )
    names = [
        columns.STORE_ID,
        columns.SALES_DATE,
        columns.SALES,
        columns.CUSTOMERS,
        columns.OPEN,
        columns.PROMO,
        columns.STATE_HOLIDAY,
        columns.SCHOOL_HOLIDAY,
    ]
    frame = pd.DataFrame(connection.execute(query).fetchall(), columns=names)
    frame[columns.PRODUCT_ID] = columns.DEFAULT_PRODUCT
    frame[columns.SALES_DATE] = pd.to_datetime(frame[columns.SALES_DATE])
    frame[columns.SALES] = frame[columns.SALES].astype(float)
    return frame[list(columns.SALES_COLUMNS)]


def sales_rows_per_store(connection: Connection, sales_date: dt.date) -> dict[int, int]:
    """Sales rows stored for one day, by store (stores without a row are absent)."""
    query = (
        select(sales.c.store_id, func.count())
        .where(sales.c.sales_date == sales_date)
        .group_by(sales.c.store_id)
    )
    return {int(store_id): int(rows) for store_id, rows in connection.execute(query)}


def _sales_upsert(statement: Any) -> Insert:
    excluded = statement.excluded
    changed = or_(
        *[sales.c[name].is_distinct_from(excluded[name]) for name in _SALES_VALUE_COLUMNS]
    )
    return statement.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[sales.c[name] for name in columns.SALES_KEY],
        set_={name: excluded[name] for name in _SALES_VALUE_COLUMNS} | {"ingested_at": func.now()},
        where=changed,
    )


def _executemany_upsert_sales(
    connection: Connection, frame: pd.DataFrame, on_progress: ProgressCallback | None
) -> int:
    """The upsert on SQLite; returns the rows inserted (not those updated)."""
    # One compiled statement and plain tuples: per-row ORM or per-dict binding would cost
    # several times the database's own work on a million rows.
    compiled = _sales_upsert(sqlite.insert(sales)).compile(
        dialect=connection.dialect,
        column_keys=list(columns.SALES_COLUMNS),
    )
    order = list(compiled.positiontup or [])
    if sorted(order) != sorted(columns.SALES_COLUMNS):
        raise RuntimeError(f"unexpected parameters in the sales upsert: {order}")
    # New rows are those with a rowid above the largest before the write: SQLite gives a new
    # row the largest rowid + 1. Read once this transaction holds SQLite's write lock (the
    # no-op update takes it), so no other writer's rows can come in between.
    _lock_extent(connection)
    largest: int = connection.execute(
        select(func.coalesce(func.max(literal_column("rowid")), 0)).select_from(sales)
    ).scalar_one()
    with _driver_cursor(connection, str(compiled)) as cursor:
        for chunk in _chunks(frame):
            cursor.executemany(str(compiled), _tuples(chunk, order))
            if on_progress:
                on_progress(len(chunk))
    new_rows = select(func.count()).select_from(sales).where(literal_column("rowid") > largest)
    return int(connection.execute(new_rows).scalar_one())


def _lock_extent(connection: Connection) -> None:
    connection.execute(
        sales_extent.update()
        .where(sales_extent.c.id == _EXTENT_ROW)
        .values(sales_rows=sales_extent.c.sales_rows)
    )


def _copy_upsert_sales(
    connection: Connection, frame: pd.DataFrame, on_progress: ProgressCallback | None
) -> int:
    """The upsert on PostgreSQL; returns the rows inserted (not those updated)."""
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
        return len(frame)
    except IntegrityError as error:
        if getattr(error.orig, "pgcode", None) != _UNIQUE_VIOLATION:
            raise
    # COPY into a transaction-scoped staging table, then one merge statement: ON CONFLICT
    # leaves unchanged rows alone and, unlike MERGE, is safe against concurrent inserts.
    staging = Table(
        "sales_staging",
        MetaData(),
        *[Column(name, sales.c[name].type) for name in columns.SALES_COLUMNS],
    )
    connection.exec_driver_sql(
        "CREATE TEMPORARY TABLE IF NOT EXISTS sales_staging "
        "(LIKE sales INCLUDING DEFAULTS) ON COMMIT DROP; TRUNCATE sales_staging"
    )
    _copy(connection, "sales_staging", frame, progress)
    merge = _sales_upsert(
        postgresql.insert(sales).from_select(list(columns.SALES_COLUMNS), select(*staging.c))
    )
    # A row the merge inserted has no deleting transaction yet (xmax 0); one it updated has
    # the merge's own. Counted in the statement, so a concurrent writer's insert of the same
    # key (which this merge then updates) is counted once, by that writer.
    merged = merge.returning(literal_column("xmax = 0").label("inserted")).cte("merged")
    counted = select(func.count()).select_from(merged).where(merged.c.inserted)
    return int(connection.execute(counted).scalar_one())


def _copy(connection: Connection, table: str, frame: pd.DataFrame, progress: _Progress) -> None:
    """COPY the frame's sales columns into `table`, chunk by chunk."""
    copy_sql = f"COPY {table} ({', '.join(columns.SALES_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
    with _driver_cursor(connection, copy_sql) as cursor:
        written = 0
        for chunk in _chunks(frame):
            cursor.copy_expert(copy_sql, _csv_buffer(chunk[list(columns.SALES_COLUMNS)]))
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
    if pa.types.is_timestamp(table.schema.field(columns.SALES_DATE).type):
        position = table.schema.get_field_index(columns.SALES_DATE)
        table = table.set_column(
            position, columns.SALES_DATE, table.column(columns.SALES_DATE).cast(pa.date32())
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
        if name == columns.SALES_DATE:
            values.append(column.dt.strftime("%Y-%m-%d").tolist())
        else:
            values.append(column.astype(object).where(column.notna(), None).tolist())
    return list(zip(*values, strict=True))
