"""Loading a folder of data files into the database: validate everything, then write once.

Nothing is written when any file has a problem; the error names file, line and column.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

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
    if not folder.is_dir():
        raise files.DataFileNotFoundError(f"{folder}: no such folder")
    sales_path = files.find_file(folder, *SALES_FILE_NAMES)
    if sales_path is None:
        raise files.DataFileNotFoundError(
            f"{folder}: no sales file ({', '.join(SALES_FILE_NAMES)})"
        )
    store_path = files.find_file(folder, *STORE_FILE_NAMES)
    stores = (
        _read_stores(store_path, files.find_file(folder, *STATE_FILE_NAMES)) if store_path else None
    )
    known = set(known_store_ids) | (set(stores[columns.STORE_ID]) if stores is not None else set())
    sales = read_sales_file(sales_path, known, limits)
    empty_stores = pd.DataFrame(columns=list(columns.STORE_COLUMNS))
    sources = [p for p in (store_path, sales_path) if p is not None]
    return Dataset(
        stores=stores if stores is not None else empty_stores, sales=sales, sources=sources
    )


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
        lambda: validate_sales(raw, known_store_ids, limits=limits),
        columns.ROSSMANN_SALES_COLUMNS,
    )


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
) -> Dataset:
    """Validate every file of `folder`, then write them in one transaction."""
    with engine.connect() as connection:
        known = store_records.store_ids(connection)
    dataset = read_dataset(folder, known)
    write_dataset(engine, dataset, on_progress)
    return dataset


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
