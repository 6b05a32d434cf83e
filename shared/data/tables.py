"""Reading one delimited file into strings, with errors that name the file, line and column.

Every reader in `readers.py` goes through here, so the official MovieLens files, RecBole's atomic
files and the generic CSV format all report bad input the same way.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.errors import FedrecError


@dataclass(frozen=True)
class Table:
    """A file's rows as strings, and how to turn a row index back into a line number."""

    path: Path
    frame: pd.DataFrame
    first_line: int  # the file line of row 0: 2 with a header, 1 without

    def where(self, row: int, column: str | None = None) -> str:
        place = f"{self.path.name} line {self.first_line + row}"
        return f"{place}, column '{column}'" if column else place


def decode(path: Path, encoding: str = "utf-8") -> str:
    """The file's text, with a line number when it is not in `encoding`."""
    if not path.is_file():
        raise FedrecError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise FedrecError(
            f"{path.name} line {line}: text is not valid {encoding.upper()} (byte {err.start})"
        ) from None
    if not text.strip():
        raise FedrecError(f"{path.name}: file is empty")
    return text


def read_table(
    path: Path,
    *,
    sep: str = ",",
    names: list[str] | None = None,
    encoding: str = "utf-8",
    required: tuple[str, ...] = (),
) -> Table:
    """Read a delimited file as strings; `names` for headerless files, else the header is used.

    Multi-character separators (ML-1M's `::`) are rewritten to a tab first so pandas can use its
    fast C parser on a million rows instead of the regex-based Python one.
    """
    text = decode(path, encoding)
    if len(sep) > 1:
        text = text.replace(sep, "\t")
        sep = "\t"
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=None if names else 0,
            names=names,
            dtype=str,
            keep_default_na=False,
            quoting=0 if sep == "," else 3,  # MovieLens titles carry stray quotes; only CSV quotes
            index_col=False,
        )
    except pd.errors.ParserError as err:
        raise FedrecError(f"{path.name}: cannot parse ({str(err).strip()})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise FedrecError(f"{path.name}: has a header but no rows")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        found = ", ".join(frame.columns)
        raise FedrecError(f"{path.name}: missing column '{missing[0]}' (columns found: {found})")
    for column in frame.columns:
        frame[column] = frame[column].str.strip()  # CRLF files leave '\r' on the last column
    return Table(path=path, frame=frame, first_line=1 if names else 2)


def numeric_column(table: Table, column: str, *, integer: bool = False) -> np.ndarray:
    """Parse one column as numbers; the first value that is not a number is reported."""
    values = pd.to_numeric(table.frame[column], errors="coerce")
    bad = np.flatnonzero(values.isna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raw = table.frame[column].iat[row]
        raise FedrecError(f"{table.where(row, column)}: '{raw}' is not a number")
    out = values.to_numpy()
    if integer:
        if not np.all(np.mod(out, 1) == 0):
            row = int(np.flatnonzero(np.mod(out, 1) != 0)[0])
            raw = table.frame[column].iat[row]
            raise FedrecError(f"{table.where(row, column)}: '{raw}' is not a whole number")
        return out.astype(np.int64)
    return out.astype(np.float64)


def unique_column(table: Table, column: str) -> None:
    """Refuse a key column with repeated values, naming both lines."""
    keys = table.frame[column]
    dup = keys.duplicated(keep="first").to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        key = keys.iat[row]
        first = int(np.flatnonzero((keys == key).to_numpy())[0])
        raise FedrecError(
            f"{table.where(row)}: duplicate {column} '{key}' "
            f"(first on line {table.first_line + first})"
        )
