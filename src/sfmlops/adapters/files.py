"""Reading data files as they are, before validation: every value as text, blanks empty."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pandas as pd

HEADER_LINES = 1


class DataFileNotFoundError(FileNotFoundError):
    """A data file the command needs is not where it was looked for."""


def read_csv_as_text(path: Path, rename: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read a CSV (plain or .gz) with every cell as a stripped string, blanks as "".

    Args:
        path: The file.
        rename: Source headers to domain names; headers not listed are kept as they are.

    Raises:
        DataFileNotFoundError: When the file does not exist.
        ValueError: When the file is not readable as CSV (the message names the file).
    """
    if not path.is_file():
        raise DataFileNotFoundError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        raise ValueError(f"{path}: not a readable CSV file ({error})") from error
    frame.columns = [str(name).strip() for name in frame.columns]
    return frame.rename(columns=dict(rename or {}))


def read_csv_chunks_as_text(
    path: Path, chunk_rows: int, rename: Mapping[str, str] | None = None
) -> Iterator[pd.DataFrame]:
    """`read_csv_as_text` in consecutive frames of at most `chunk_rows` rows, each indexed
    from 0 (a row's position in the file is its chunk's first position plus its index).

    Raises:
        DataFileNotFoundError: When the file does not exist.
        ValueError: When the file is not readable as CSV (the message names the file).
    """
    if not path.is_file():
        raise DataFileNotFoundError(f"{path}: no such file")
    try:
        with pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=False, chunksize=chunk_rows
        ) as reader:
            for frame in reader:
                frame.columns = [str(name).strip() for name in frame.columns]
                yield frame.reset_index(drop=True).rename(columns=dict(rename or {}))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        raise ValueError(f"{path}: not a readable CSV file ({error})") from error


def line_number(row_position: int) -> int:
    """The 1-based line of a data row in its CSV file, counting the header line."""
    return row_position + HEADER_LINES + 1


def line_position(row_position: int) -> str:
    """A data row named by its file line, as every message about a file names it."""
    return f"line {line_number(row_position)}"


def find_file(folder: Path, *names: str) -> Path | None:
    """The first of `names` that exists in `folder`, or None."""
    for name in names:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None
