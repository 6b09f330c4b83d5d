"""Forecast files: a future file (or a plan) in the competition's test format in, a submission
file out."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from sfmlops.adapters import files
from sfmlops.core import columns
from sfmlops.core.forecasting.bundle import ForecastBundle
from sfmlops.core.forecasting.plan import as_plan
from sfmlops.core.validation import validate_future
from sfmlops.services.loading import DataFileError, FileIssue

_FILE_COLUMN = {domain: header for header, domain in columns.ROSSMANN_FUTURE_COLUMNS.items()}
_REQUIRED_FUTURE_HEADERS = ("Id", "Store", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday")


def read_future_file(path: Path, bundle: ForecastBundle) -> tuple[pd.Series, pd.DataFrame]:
    """Read a future file in the competition's test format and check it against the bundle.

    Columns `Id,Store,DayOfWeek,Date,Open,Promo,StateHoliday,SchoolHoliday` (DayOfWeek is
    optional and checked against the date when present); a blank `Open` means open.

    Returns:
        The row ids and the future-covariates frame (`columns.FUTURE_COLUMNS`), row by row.

    Raises:
        DataFileError: Naming line and column of every problem (missing columns, unknown
            stores, unparsable or past dates, bad flags, duplicate rows).
        files.DataFileNotFoundError: When the file does not exist.
    """
    known = sorted({store for store, _ in bundle.series})
    row_id, future = _read_covariates_file(
        path, known, after=bundle.last_date.date(), with_row_ids=True
    )
    return cast(pd.Series, row_id), future


def read_plan_file(path: Path, known_store_ids: Collection[int]) -> pd.DataFrame:
    """Read a plan of known future covariates in the competition's test format.

    The columns of `read_future_file`, `Id` optional (ignored); a blank `Open` means open.

    Returns:
        The plan (`plan.PLAN_COLUMNS`), one row per store and day.

    Raises:
        DataFileError: Naming line and column of every problem (missing columns, unknown
            stores, unparsable dates, bad flags, a store's day given twice).
        files.DataFileNotFoundError: When the file does not exist.
    """
    _, future = _read_covariates_file(path, known_store_ids, after=None, with_row_ids=False)
    return as_plan(future)


def _read_covariates_file(
    path: Path, known_store_ids: Collection[int], *, after: dt.date | None, with_row_ids: bool
) -> tuple[pd.Series | None, pd.DataFrame]:
    raw = files.read_csv_as_text(path)
    required = _REQUIRED_FUTURE_HEADERS if with_row_ids else _REQUIRED_FUTURE_HEADERS[1:]
    missing = [name for name in required if name not in raw.columns]
    if missing:
        raise DataFileError([FileIssue(path, None, name, "", "missing column") for name in missing])
    if raw.empty:
        raise DataFileError(
            [FileIssue(path, None, required[0], "", "a header but no rows to forecast")]
        )
    raw = raw.rename(columns=columns.ROSSMANN_FUTURE_COLUMNS)
    raw[columns.OPEN] = raw[columns.OPEN].where(raw[columns.OPEN] != "", "1")
    validated = validate_future(
        raw, sorted(known_store_ids), after=after, position=files.line_position
    )
    issues = [
        FileIssue(
            path,
            files.line_number(int(row)),
            _FILE_COLUMN.get(column, column),
            str(value),
            str(reason),
        )
        for row, column, value, reason in zip(
            validated.issues["row"].tolist(),
            validated.issues["column"].astype(str).tolist(),
            validated.issues["value"].tolist(),
            validated.issues["reason"].tolist(),
            strict=True,
        )
    ]
    row_id = None
    if with_row_ids:
        row_id = pd.to_numeric(raw[columns.ROSSMANN_ROW_ID], errors="coerce")
        bad_id = row_id.isna() | (row_id != np.floor(row_id.fillna(0)))
        issues += [
            FileIssue(
                path,
                files.line_number(int(i)),
                "Id",
                str(raw[columns.ROSSMANN_ROW_ID].iloc[i]),
                "not a whole number",
            )
            for i in np.flatnonzero(bad_id.to_numpy())
        ]
    if issues:
        issues.sort(key=lambda issue: (issue.line or 0, issue.column))
        raise DataFileError(issues)
    return (
        None if row_id is None else row_id.astype("int64"),
        validated.valid.reset_index(drop=True),
    )


def write_submission(path: Path, row_ids: pd.Series, forecast: pd.DataFrame) -> None:
    """Write `Id,Sales,Sales_lower,Sales_upper,Sales_lower_95,Sales_upper_95` atomically.

    `Sales_lower`..`Sales_upper` is the 80 % interval, the `_95` columns the 95 % one. No
    partial file is left on failure.
    """
    frame = pd.DataFrame({columns.ROSSMANN_ROW_ID: row_ids.to_numpy()})
    for column in (
        columns.YHAT,
        columns.YHAT_LOWER,
        columns.YHAT_UPPER,
        columns.YHAT_LOWER_95,
        columns.YHAT_UPPER_95,
    ):
        frame[column] = forecast[column].to_numpy(dtype=float).round(2)
    frame = frame.rename(columns=columns.ROSSMANN_SUBMISSION_COLUMNS)
    _write_atomically(path, frame.to_csv(index=False))


def _write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and a rename.

    The file gets the permissions any new file gets (0666 less the umask), not the temporary
    file's 0600. The folder must exist: a mistyped path is an error, not a new folder.
    """
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(handle, 0o666 & ~umask)
        with os.fdopen(handle, "w") as out:
            out.write(text)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
