"""The storage layer on SQLite and a real PostgreSQL server, with the same tests."""

from __future__ import annotations

import datetime as dt
import gzip
import shutil
from pathlib import Path

import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from sfmlops.adapters.db import dead_letter_records, sales_records, store_records
from sfmlops.adapters.db.engine import current_revision, make_engine, migrate
from sfmlops.adapters.db.tables import ingest_dead_letters, metadata, sales, stores
from sfmlops.core import columns
from sfmlops.services import loading

pytestmark = pytest.mark.integration


def table_rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (stores, sales, ingest_dead_letters)
        }


def test_migrations_create_exactly_the_declared_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)

    assert differences == []
    assert current_revision(engine) is not None
    migrate(engine)  # a second run is a no-op


def test_loading_a_folder_writes_stores_and_sales(engine: Engine, rossmann_slice: Path) -> None:
    loading.load_folder(engine, rossmann_slice)

    with engine.connect() as connection:
        summary = sales_records.sales_summary(connection)
        stored = store_records.list_stores(connection)
        history = sales_records.read_sales(connection, store_ids=[1], start=dt.date(2015, 6, 13))
    expected = pd.read_csv(rossmann_slice / "train.csv.gz")
    assert summary.rows == len(expected)
    assert summary.stores == summary.series == 20
    assert (summary.first_date, summary.last_date) == (dt.date(2015, 3, 16), dt.date(2015, 6, 13))
    assert stored[columns.STORE_ID].tolist() == list(range(1, 21))
    assert stored.set_index(columns.STORE_ID).loc[1, columns.STATE] == "HE"
    assert history[columns.SALES].tolist() == [4256.0]
    assert history[columns.CUSTOMERS].tolist() == [502]


def test_loading_twice_changes_nothing(engine: Engine, rossmann_slice: Path) -> None:
    loading.load_folder(engine, rossmann_slice)
    with engine.connect() as connection:
        before = sales_records.read_sales(connection)
        stamps = connection.execute(select(func.max(sales.c.ingested_at))).scalar_one()

    loading.load_folder(engine, rossmann_slice)

    with engine.connect() as connection:
        after = sales_records.read_sales(connection)
        assert connection.execute(select(func.max(sales.c.ingested_at))).scalar_one() == stamps
    pd.testing.assert_frame_equal(before, after)


def test_an_upsert_replaces_the_values_of_its_key(engine: Engine, rossmann_slice: Path) -> None:
    loading.load_folder(engine, rossmann_slice)
    with engine.connect() as connection:
        day = sales_records.read_sales(connection, store_ids=[2], start=dt.date(2015, 6, 13))
    corrected = day.assign(
        **{columns.SALES: 1.0, columns.CUSTOMERS: pd.array([None], dtype="Int64")}
    )

    with engine.begin() as connection:
        sales_records.upsert_sales(connection, corrected)

    with engine.connect() as connection:
        again = sales_records.read_sales(connection, store_ids=[2], start=dt.date(2015, 6, 13))
        assert sales_records.sales_summary(connection).rows == len(
            pd.read_csv(rossmann_slice / "train.csv.gz")
        )
    assert again[columns.SALES].tolist() == [1.0]
    assert again[columns.CUSTOMERS].isna().all()


def sales_rows(rows: list[tuple[int, str, float]]) -> pd.DataFrame:
    """Canonical sales rows from (store_id, sales_date, sales)."""
    stores_, days, values = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            columns.STORE_ID: stores_,
            columns.PRODUCT_ID: columns.DEFAULT_PRODUCT,
            columns.SALES_DATE: pd.to_datetime(list(days)),
            columns.SALES: values,
            columns.CUSTOMERS: 10,
            columns.OPEN: 1,
            columns.PROMO: 0,
            columns.STATE_HOLIDAY: "0",
            columns.SCHOOL_HOLIDAY: 0,
        }
    )


def test_an_upsert_writes_new_and_changed_rows_and_leaves_unchanged_ones_alone(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with engine.begin() as connection:
        sales_records.upsert_sales(
            connection, sales_rows([(3, "2015-06-01", 5.0), (3, "2015-06-02", 6.0)])
        )
        # A stamp no write of this test makes: an untouched row keeps it.
        connection.execute(
            sales.update().values(ingested_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        )
    # Three rows a chunk: on PostgreSQL the first chunk (new keys only) goes straight into
    # sales before the second meets a stored key, so the fallback must undo it.
    monkeypatch.setattr(sales_records, "_CHUNK_ROWS", 3)
    frame = sales_rows(
        [
            (1, "2015-06-01", 1.0),
            (3, "2015-06-02", 7.0),  # changed
            (1, "2015-06-02", 2.0),
            (2, "2015-06-01", 3.0),
            (3, "2015-06-01", 5.0),  # unchanged
            (1, "2015-06-01", 1.5),  # the later row of a key wins
            (2, "2015-06-02", 4.0),
        ]
    )
    progress: list[int] = []

    with engine.begin() as connection:
        written = sales_records.upsert_sales(connection, frame, progress.append)

    with engine.connect() as connection:
        stored = connection.execute(
            select(sales.c.store_id, sales.c.sales_date, sales.c.sales, sales.c.ingested_at)
        ).all()
    values = {(store, str(day)): value for store, day, value, _ in stored}
    untouched = {(store, str(day)) for store, day, _, at in stored if at.year == 2000}
    assert written == sum(progress) == 6
    assert values == {
        (1, "2015-06-01"): 1.5,
        (1, "2015-06-02"): 2.0,
        (2, "2015-06-01"): 3.0,
        (2, "2015-06-02"): 4.0,
        (3, "2015-06-01"): 5.0,
        (3, "2015-06-02"): 7.0,
    }
    assert untouched == {(3, "2015-06-01")}


def test_the_latest_read_picks_each_series_latest_record_in_the_range(engine: Engine) -> None:
    rows = sales_rows(
        [
            (1, "2015-06-01", 1.0),
            (1, "2015-06-03", 3.0),
            (2, "2015-06-02", 4.0),
            (2, "2015-06-05", 5.0),
            (3, "2015-05-30", 6.0),
        ]
    )
    # A second product of store 1 whose latest day differs from the first product's.
    other = sales_rows([(1, "2015-06-02", 7.0), (1, "2015-06-04", 8.0)])
    other[columns.PRODUCT_ID] = "bread"
    with engine.begin() as connection:
        sales_records.upsert_sales(connection, pd.concat([rows, other], ignore_index=True))

    def latest(start: str | None = None, end: str | None = None) -> list[tuple[int, str, str]]:
        with engine.connect() as connection:
            frame = sales_records.read_latest_sales(
                connection,
                start=dt.date.fromisoformat(start) if start else None,
                end=dt.date.fromisoformat(end) if end else None,
            )
        assert list(frame.columns) == list(columns.SALES_COLUMNS)
        return [
            (int(store), product, f"{day:%Y-%m-%d}={value:g}")
            for store, product, day, value in frame[
                [columns.STORE_ID, columns.PRODUCT_ID, columns.SALES_DATE, columns.SALES]
            ].itertuples(index=False)
        ]

    assert latest() == [
        (1, "bread", "2015-06-04=8"),
        (1, "total", "2015-06-03=3"),
        (2, "total", "2015-06-05=5"),
        (3, "total", "2015-05-30=6"),
    ]
    # The range bounds each series' pick; a series with nothing in the range is absent.
    assert latest(start="2015-06-01", end="2015-06-02") == [
        (1, "bread", "2015-06-02=7"),
        (1, "total", "2015-06-01=1"),
        (2, "total", "2015-06-02=4"),
    ]


def kept_and_counted(
    engine: Engine,
) -> tuple[tuple[int, dt.date | None], tuple[int, dt.date | None]]:
    """The sales row count and latest date as kept on write, and as a scan finds them."""
    with engine.connect() as connection:
        kept = sales_records.sales_rows_and_latest_date(connection)
        rows, latest = connection.execute(select(func.count(), func.max(sales.c.sales_date))).one()
    return kept, (rows, None if latest is None else dt.date.fromisoformat(str(latest)[:10]))


def test_the_kept_row_count_and_latest_date_follow_every_write(engine: Engine) -> None:
    assert kept_and_counted(engine) == ((0, None), (0, None))
    steps = [
        # New keys only (PostgreSQL's straight COPY).
        [(1, "2015-06-01", 1.0), (2, "2015-06-01", 2.0)],
        # A changed row, an unchanged one and a new later day (PostgreSQL's merge).
        [(1, "2015-06-01", 1.5), (2, "2015-06-01", 2.0), (1, "2015-06-03", 3.0)],
        # An earlier day: one more row, the same latest date.
        [(3, "2015-05-30", 4.0)],
    ]
    expected = [(2, dt.date(2015, 6, 1)), (3, dt.date(2015, 6, 3)), (4, dt.date(2015, 6, 3))]
    for rows, figures in zip(steps, expected, strict=True):
        with engine.begin() as connection:
            sales_records.upsert_sales(connection, sales_rows(rows))
        assert kept_and_counted(engine) == (figures, figures)

    def write_then_fail() -> None:
        with engine.begin() as connection:
            sales_records.upsert_sales(connection, sales_rows([(4, "2015-06-09", 5.0)]))
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert kept_and_counted(engine)[0] == expected[-1]

    with engine.begin() as connection:
        assert sales_records.delete_sales_from(connection, dt.date(2015, 6, 2)) == 1
    assert kept_and_counted(engine) == ((3, dt.date(2015, 6, 1)), (3, dt.date(2015, 6, 1)))


def test_the_migration_counts_the_sales_already_stored(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine, "0008")
        with engine.begin() as connection:
            connection.execute(
                sales.insert(),
                sales_rows([(1, "2015-06-01", 1.0), (1, "2015-06-02", 2.0)])
                .assign(**{columns.SALES_DATE: lambda f: f[columns.SALES_DATE].dt.date})
                .to_dict("records"),
            )

        migrate(engine)

        assert kept_and_counted(engine) == ((2, dt.date(2015, 6, 2)), (2, dt.date(2015, 6, 2)))
    finally:
        engine.dispose()


def corrupt(folder: Path, target: Path, edit: str) -> Path:
    shutil.copytree(folder, target)
    frame = pd.read_csv(target / "train.csv.gz", dtype=str, keep_default_na=False)
    if edit == "missing column":
        frame = frame.drop(columns=["Promo"])
    elif edit == "unparsable date":
        frame.loc[5, "Date"] = "2015-06-31"
    elif edit == "negative sales":
        frame.loc[5, "Sales"] = "-12"
    elif edit == "unknown store":
        frame.loc[5, "Store"] = "4242"
    elif edit == "duplicate row":
        frame = pd.concat([frame.iloc[:6], frame.iloc[[3]], frame.iloc[6:]], ignore_index=True)
    with gzip.open(target / "train.csv.gz", "wt") as out:
        frame.to_csv(out, index=False)
    return target


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("missing column", "train.csv.gz, column Promo: missing required column"),
        (
            "unparsable date",
            "train.csv.gz, line 7, column Date: not a date in YYYY-MM-DD form (value '2015-06-31')",
        ),
        ("negative sales", "train.csv.gz, line 7, column Sales: must be >= 0 (value '-12')"),
        (
            "unknown store",
            "train.csv.gz, line 7, column Store: unknown store (not in the store metadata)",
        ),
        (
            "duplicate row",
            "train.csv.gz, line 8, column Date: duplicate store, product and date (first seen at line 5)",
        ),
    ],
)
def test_a_bad_file_is_refused_whole_and_changes_nothing(
    engine: Engine, rossmann_slice: Path, tmp_path: Path, edit: str, expected: str
) -> None:
    before = table_rows(engine)
    bad = corrupt(rossmann_slice, tmp_path / "bad", edit)

    with pytest.raises(loading.DataFileError) as error:
        loading.load_folder(engine, bad)

    assert expected in str(error.value)
    assert "nothing was written" in str(error.value)
    assert table_rows(engine) == before == {"stores": 0, "sales": 0, "ingest_dead_letters": 0}


def test_loading_in_chunks_writes_what_loading_at_once_writes(
    engine: Engine, rossmann_slice: Path
) -> None:
    dataset = loading.read_dataset(rossmann_slice)

    checked = loading.load_folder(engine, rossmann_slice, chunk_rows=500)  # 4 chunks

    with engine.connect() as connection:
        stored = sales_records.read_sales(connection)
    assert checked.sales_rows == len(dataset.sales) == len(stored)
    ordered = dataset.sales.sort_values(list(columns.SALES_KEY)).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        stored[list(columns.SALES_COLUMNS)].reset_index(drop=True),
        ordered[list(columns.SALES_COLUMNS)],
        check_dtype=False,
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # A repeat of the first row far into a later chunk.
        (
            "repeat",
            "line 1502, column Date: duplicate store, product and date (first seen at line 2)",
        ),
        ("sales", "line 1302, column Sales: must be >= 0 (value '-5')"),
    ],
)
def test_a_problem_in_a_later_chunk_names_its_line_and_nothing_is_written(
    engine: Engine, rossmann_slice: Path, tmp_path: Path, edit: str, expected: str
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(rossmann_slice, bad)
    frame = pd.read_csv(bad / "train.csv.gz", dtype=str, keep_default_na=False)
    if edit == "repeat":
        frame = pd.concat([frame.iloc[:1500], frame.iloc[[0]], frame.iloc[1500:]])
    else:
        frame.loc[1300, "Sales"] = "-5"
    with gzip.open(bad / "train.csv.gz", "wt") as out:
        frame.to_csv(out, index=False)

    with pytest.raises(loading.DataFileError) as error:
        loading.load_folder(engine, bad, chunk_rows=500)

    assert f"train.csv.gz, {expected}" in str(error.value)
    assert table_rows(engine) == {"stores": 0, "sales": 0, "ingest_dead_letters": 0}


def test_a_stores_totals_sum_its_products(engine: Engine, rossmann_slice: Path) -> None:
    loading.load_folder(engine, rossmann_slice)
    with engine.connect() as connection:
        day = sales_records.read_sales(connection, store_ids=[2], start=dt.date(2015, 6, 12))
    other = day.assign(
        **{columns.PRODUCT_ID: "soap", columns.SALES: 10.0, columns.STATE_HOLIDAY: "a"}
    )
    with engine.begin() as connection:
        sales_records.upsert_sales(connection, other)

    with engine.connect() as connection:
        totals = sales_records.read_store_totals(
            connection, 2, dt.date(2015, 6, 12), dt.date(2015, 6, 13)
        )

    assert totals[columns.PRODUCT_ID].tolist() == [columns.DEFAULT_PRODUCT] * 2
    assert totals[columns.SALES].tolist() == (day[columns.SALES] + 10.0).tolist()
    assert totals[columns.CUSTOMERS].tolist() == (day[columns.CUSTOMERS] * 2).tolist()
    assert totals[columns.STATE_HOLIDAY].tolist() == ["a", "a"]


def test_a_failure_while_writing_rolls_back_everything(
    engine: Engine, rossmann_slice: Path
) -> None:
    dataset = loading.read_dataset(rossmann_slice)
    # The last chunk breaks a NOT NULL constraint, after stores and earlier rows were sent.
    broken_sales = dataset.sales.copy()
    broken_sales.loc[broken_sales.index[-1], columns.SALES] = None
    broken = loading.Dataset(stores=dataset.stores, sales=broken_sales)

    with pytest.raises(IntegrityError):
        loading.write_dataset(engine, broken)

    assert table_rows(engine) == {"stores": 0, "sales": 0, "ingest_dead_letters": 0}


def test_dead_letters_keep_the_raw_record(engine: Engine) -> None:
    letter = dead_letter_records.DeadLetter(
        source="kafka", payload='{"store_id": "x"}', reason="store_id: not a number",
        kafka_topic="sales.daily", kafka_partition=0, kafka_offset=41,
    )  # fmt: skip
    with engine.begin() as connection:
        dead_letter_records.add_dead_letters(connection, [letter])

    with engine.connect() as connection:
        assert dead_letter_records.count_dead_letters(connection) == 1
        row = connection.execute(select(ingest_dead_letters)).mappings().one()
    assert (row["payload"], row["kafka_offset"]) == ('{"store_id": "x"}', 41)


def test_reading_in_chunks_returns_what_reading_at_once_returns(
    engine: Engine, rossmann_slice: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loading.load_folder(engine, rossmann_slice)
    with engine.connect() as connection:
        at_once = sales_records.read_sales(connection)
        monkeypatch.setattr(sales_records, "READ_CHUNK_ROWS", 70)  # 26 chunks
        in_chunks = sales_records.read_sales(connection)
        monkeypatch.setattr(sales_records, "READ_CHUNK_ROWS", 10**9)
        none = sales_records.read_sales(connection, start=dt.date(2030, 1, 1))

    assert len(at_once) > 70 * 25
    pd.testing.assert_frame_equal(in_chunks, at_once)
    assert none.empty
    assert list(none.columns) == list(columns.SALES_COLUMNS)
    assert pd.api.types.is_datetime64_any_dtype(none[columns.SALES_DATE])
