"""Loading a folder of data files into the database: validate everything, then write once.

Nothing is written when any file has a problem; the error names file, line and column.
`load_folder` reads the sales file in chunks, twice (to validate, then to write), so its
memory is bounded by a chunk whatever the file's size; `read_dataset` holds a whole folder
in memory for callers that want the frames.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from sfmlops.adapters import files
from sfmlops.adapters.db import sales_records, store_records
from sfmlops.core import columns
from sfmlops.core.validation import (
    MissingColumnsError,
    SalesLimits,
    Validated,
    validate_sales,
    validate_stores,
)
from sfmlops.services import realized_accuracy

STORE_FILE_NAMES = ("store.csv", "store.csv.gz")
STATE_FILE_NAMES = ("store_states.csv", "store_states.csv.gz")
SALES_FILE_NAMES = ("train.csv.gz", "train.csv", "sales.csv.gz", "sales.csv")
MAX_ISSUES_SHOWN = 20
# Sales rows `load_folder` validates and writes at a time. A whole file of 32.7 M rows
# (100k series for a year) read at once peaked at 22 GiB (docs/benchmarks.md).
SALES_CHUNK_ROWS = 1_000_000
_DUPLICATE = "duplicate store, product and date (first seen at {first})"


@dataclass(frozen=True)
class FileIssue:
    """One problem in one cell of a data file."""

    file: Path
    line: int | None  # None: the problem is the whole file (e.g. a missing column)
    column: str
    value: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file.name}, line {self.line}" if self.line else self.file.name
        shown = f" (value {self.value!r})" if self.value else ""
        return f"{where}, column {self.column}: {self.reason}{shown}"


class DataFileError(ValueError):
    """One or more data files failed validation; nothing was written."""

    def __init__(self, issues: list[FileIssue], total: int | None = None) -> None:
        self.issues = issues
        self.total = total if total is not None else len(issues)
        shown = "\n".join(f"  {issue}" for issue in issues[:MAX_ISSUES_SHOWN])
        more = self.total - min(len(issues), MAX_ISSUES_SHOWN)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{self.total} problem(s) found, nothing was written:\n{shown}{tail}")


@dataclass(frozen=True)
class Dataset:
    """Validated stores and sales, ready to be written."""

    stores: pd.DataFrame
    sales: pd.DataFrame
    sources: list[Path] = field(default_factory=list)


def read_dataset(
    folder: Path, known_store_ids: Collection[int] = (), limits: SalesLimits | None = None
) -> Dataset:
    """Read and validate the store metadata and sales files in `folder`.

    The folder holds a sales file (`train.csv[.gz]` in the Rossmann layout) and, unless the
    database already has them, the store metadata (`store.csv`, optionally `store_states.csv`).

    Args:
        folder: Where the files are.
        known_store_ids: Stores already in the database; sales may refer to these too.
        limits: Plausible dates and amounts (default `SalesLimits()`).

    Raises:
        DataFileError: When any file fails validation (every problem found is listed).
        files.DataFileNotFoundError: When the folder has no sales file.
    """
    sales_path, stores, sources = _folder_files(folder)
    known = set(known_store_ids) | set(stores[columns.STORE_ID])
    sales = read_sales_file(sales_path, known, limits)
    return Dataset(stores=stores, sales=sales, sources=sources)


def read_sales_file(
    path: Path, known_store_ids: Collection[int], limits: SalesLimits | None = None
) -> pd.DataFrame:
    """Read and validate one sales file (Rossmann headers or domain names).

    Raises:
        DataFileError: When any row fails validation.
    """
    raw = files.read_csv_as_text(path, columns.ROSSMANN_SALES_COLUMNS)
    return _checked(
        path,
        lambda: validate_sales(raw, known_store_ids, limits=limits, position=files.line_position),
        columns.ROSSMANN_SALES_COLUMNS,
    )


@dataclass(frozen=True)
class CheckedFolder:
    """A folder whose files all passed validation, ready for `write_checked`.

    Attributes:
        stores: The validated store metadata (empty when the folder has none).
        sales_path: The sales file (read again, in chunks, when written).
        sales_rows: Its rows.
        known_store_ids: Stores the sales may refer to (database and folder).
    """

    stores: pd.DataFrame
    sales_path: Path
    sales_rows: int
    known_store_ids: frozenset[int]
    limits: SalesLimits | None = None
    chunk_rows: int = SALES_CHUNK_ROWS
    sources: list[Path] = field(default_factory=list)


def check_folder(
    folder: Path,
    known_store_ids: Collection[int] = (),
    limits: SalesLimits | None = None,
    chunk_rows: int = SALES_CHUNK_ROWS,
) -> CheckedFolder:
    """Validate the store files and, chunk by chunk, every sales row (duplicate keys across
    the whole file included), holding one chunk of sales at a time.

    Raises:
        DataFileError: When any file fails validation (the first problems, and how many).
        files.DataFileNotFoundError: When the folder has no sales file.
    """
    sales_path, stores, sources = _folder_files(folder)
    known = frozenset(set(known_store_ids) | set(stores[columns.STORE_ID].astype(int)))
    issues: list[FileIssue] = []
    total_issues = 0
    keys: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    numbers: dict[str, dict[Any, int]] = {}
    rows = 0
    for first_row, raw in _sales_chunks(sales_path, chunk_rows):
        result = _validated_chunk(sales_path, raw, known, limits)
        if not result.ok:
            total_issues += len(result.issues)
            if len(issues) < MAX_ISSUES_SHOWN:
                issues += _file_issues(sales_path, result.issues.head(MAX_ISSUES_SHOWN), first_row)
        keys.append(_series_day_keys(result.valid, numbers))
        positions.append(result.valid.index.to_numpy(dtype=np.int64) + first_row)
        rows += len(raw)
    duplicates = _duplicates(
        np.concatenate(keys) if keys else np.empty(0, dtype=np.int64),
        np.concatenate(positions) if positions else np.empty(0, dtype=np.int64),
    )
    total_issues += len(duplicates)
    issues += [
        FileIssue(
            sales_path,
            files.line_number(row),
            "Date",
            "",
            _DUPLICATE.format(first=files.line_position(first)),
        )
        for row, first in duplicates[:MAX_ISSUES_SHOWN]
    ]
    if issues:
        issues.sort(key=lambda issue: issue.line or 0)
        raise DataFileError(issues[:MAX_ISSUES_SHOWN], total=total_issues)
    return CheckedFolder(stores, sales_path, rows, known, limits, chunk_rows, sources)


def write_checked(
    engine: Engine,
    checked: CheckedFolder,
    on_progress: sales_records.ProgressCallback | None = None,
) -> int:
    """Write a checked folder in one transaction: stores, then the sales chunk by chunk;
    returns the sales rows written. Then, once that has committed, scores the forecasts
    issued for the days loaded."""
    days: set[dt.date] = set()
    written = 0
    with engine.begin() as connection:
        store_records.upsert_stores(connection, checked.stores)
        for _, raw in _sales_chunks(checked.sales_path, checked.chunk_rows):
            sales = _validated_chunk(
                checked.sales_path, raw, checked.known_store_ids, checked.limits
            ).valid
            written += sales_records.upsert_sales(connection, sales, on_progress)
            days |= realized_accuracy.sales_days(sales)
    realized_accuracy.score_actuals(engine, days)
    return written


def _folder_files(folder: Path) -> tuple[Path, pd.DataFrame, list[Path]]:
    """The sales file, the validated store metadata (empty without store files) and the
    files read."""
    if not folder.is_dir():
        raise files.DataFileNotFoundError(f"{folder}: no such folder")
    sales_path = files.find_file(folder, *SALES_FILE_NAMES)
    if sales_path is None:
        raise files.DataFileNotFoundError(
            f"{folder}: no sales file ({', '.join(SALES_FILE_NAMES)})"
        )
    store_path = files.find_file(folder, *STORE_FILE_NAMES)
    stores = (
        _read_stores(store_path, files.find_file(folder, *STATE_FILE_NAMES))
        if store_path
        else pd.DataFrame(columns=list(columns.STORE_COLUMNS))
    )
    return sales_path, stores, [p for p in (store_path, sales_path) if p is not None]


def _sales_chunks(path: Path, chunk_rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """(position of the chunk's first row, its rows) for the sales file; a file with no
    rows is one empty chunk, so its header is still checked."""
    first_row = 0
    for raw in files.read_csv_chunks_as_text(path, chunk_rows, columns.ROSSMANN_SALES_COLUMNS):
        yield first_row, raw
        first_row += len(raw)
    if first_row == 0:
        yield 0, files.read_csv_as_text(path, columns.ROSSMANN_SALES_COLUMNS)


def _validated_chunk(
    path: Path, raw: pd.DataFrame, known: Collection[int], limits: SalesLimits | None
) -> Validated:
    """A chunk of sales validated but for duplicate keys (`check_folder` checks those
    across the whole file)."""
    try:
        return validate_sales(raw, known, reject_duplicates=False, limits=limits)
    except MissingColumnsError as error:
        source_name = {domain: source for source, domain in columns.ROSSMANN_SALES_COLUMNS.items()}
        raise DataFileError(
            [
                FileIssue(path, None, source_name.get(name, name), "", "missing required column")
                for name in error.missing
            ]
        ) from error


def _file_issues(path: Path, issues: pd.DataFrame, first_row: int = 0) -> list[FileIssue]:
    """Validation issues (rows as positions in a chunk starting at `first_row`) as file issues."""
    source_name = {domain: source for source, domain in columns.ROSSMANN_SALES_COLUMNS.items()}
    return [
        FileIssue(
            path,
            files.line_number(first_row + int(issue["row"])),
            source_name.get(str(issue["column"]), str(issue["column"])),
            str(issue["value"]),
            str(issue["reason"]),
        )
        for issue in issues.to_dict("records")
    ]


def _series_day_keys(sales: pd.DataFrame, numbers: dict[str, dict[Any, int]]) -> np.ndarray:
    """One int64 per (store, product, date) of valid sales rows, equal for equal keys.

    Stores and products are numbered in the order they appear (`numbers`, grown chunk by
    chunk): a store's number takes the top 21 bits, a product's the next 22 and the day
    since 1970 the last 20 (every date the limits allow).
    """
    store = _numbered(sales[columns.STORE_ID], numbers.setdefault("store", {}), 21)
    product = _numbered(sales[columns.PRODUCT_ID], numbers.setdefault("product", {}), 22)
    days = sales[columns.SALES_DATE].to_numpy(dtype="datetime64[D]").astype(np.int64)
    return (store << 42) | (product << 20) | days


def _numbered(values: pd.Series, numbers: dict[Any, int], bits: int) -> np.ndarray:
    for value in pd.unique(values):
        numbers.setdefault(value, len(numbers))
    if len(numbers) > 2**bits:
        raise ValueError(f"more than {2**bits:,} distinct {values.name} in one sales file")
    return values.map(numbers).to_numpy(dtype=np.int64)


def _duplicates(keys: np.ndarray, positions: np.ndarray) -> list[tuple[int, int]]:
    """(position, position of its key's first row) of every row repeating an earlier key,
    in file order."""
    if len(keys) < 2:
        return []
    order = np.lexsort((positions, keys))
    ordered = keys[order]
    repeat = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
    if not len(repeat):
        return []
    group_start = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    first_of = positions[order][group_start[np.searchsorted(group_start, repeat, side="right") - 1]]
    found = sorted(zip(positions[order][repeat].tolist(), first_of.tolist(), strict=True))
    return [(int(row), int(first)) for row, first in found]


def write_dataset(
    engine: Engine,
    dataset: Dataset,
    on_progress: sales_records.ProgressCallback | None = None,
) -> int:
    """Write stores, then sales, in one transaction; returns the sales rows written.

    Then, once that has committed, scores the forecasts issued for the days loaded.
    """
    with engine.begin() as connection:
        store_records.upsert_stores(connection, dataset.stores)
        written = sales_records.upsert_sales(connection, dataset.sales, on_progress)
    realized_accuracy.score_actuals(engine, realized_accuracy.sales_days(dataset.sales))
    return written


def load_folder(
    engine: Engine,
    folder: Path,
    on_progress: sales_records.ProgressCallback | None = None,
    limits: SalesLimits | None = None,
    chunk_rows: int = SALES_CHUNK_ROWS,
) -> CheckedFolder:
    """Validate every file of `folder`, then write them in one transaction, holding one
    chunk of `chunk_rows` sales rows at a time.

    Raises:
        DataFileError: When any file fails validation (nothing is written).
        files.DataFileNotFoundError: When the folder has no sales file.
    """
    with engine.connect() as connection:
        known = store_records.store_ids(connection)
    checked = check_folder(folder, known, limits, chunk_rows)
    write_checked(engine, checked, on_progress)
    return checked


def _read_stores(store_path: Path, state_path: Path | None) -> pd.DataFrame:
    raw = files.read_csv_as_text(store_path, columns.ROSSMANN_STORE_COLUMNS)
    stores = _checked(store_path, lambda: validate_stores(raw), columns.ROSSMANN_STORE_COLUMNS)
    if state_path is None:
        return stores
    states_raw = files.read_csv_as_text(state_path, columns.ROSSMANN_STATE_COLUMNS)
    if columns.STATE not in states_raw:
        raise DataFileError([FileIssue(state_path, None, "State", "", "missing required column")])
    states = _checked(
        state_path, lambda: validate_stores(states_raw), columns.ROSSMANN_STATE_COLUMNS
    )
    unknown = ~states[columns.STORE_ID].isin(stores[columns.STORE_ID])
    if unknown.any():
        issues = [
            FileIssue(
                state_path,
                files.line_number(int(position)),
                "Store",
                str(store),
                f"store not in {store_path.name}",
            )
            for position, store in zip(
                np.flatnonzero(unknown.to_numpy()),
                states.loc[unknown, columns.STORE_ID],
                strict=True,
            )
        ]
        raise DataFileError(issues)
    by_store = states.set_index(columns.STORE_ID)[columns.STATE]
    stores[columns.STATE] = (
        stores[columns.STORE_ID].map(by_store).where(lambda s: s.notna(), stores[columns.STATE])
    )
    return stores


def _checked(path: Path, validate: Callable[[], Validated], rename: dict[str, str]) -> pd.DataFrame:
    source_name = {domain: source for source, domain in rename.items()}
    try:
        result = validate()
    except MissingColumnsError as error:
        raise DataFileError(
            [
                FileIssue(path, None, source_name.get(name, name), "", "missing required column")
                for name in error.missing
            ]
        ) from error
    if not result.ok:
        shown = result.issues.head(MAX_ISSUES_SHOWN)
        raise DataFileError(
            [
                FileIssue(
                    path,
                    files.line_number(int(issue["row"])),
                    source_name.get(str(issue["column"]), str(issue["column"])),
                    str(issue["value"]),
                    str(issue["reason"]),
                )
                for issue in shown.to_dict("records")
            ],
            total=len(result.issues),
        )
    return result.valid
