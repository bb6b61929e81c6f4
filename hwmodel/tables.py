"""The one reader of the CSV tables every layer uses (latency files, benchmark tables, truth files).

A table that we fit on, score against or look architectures up in must not give a wrong number
with exit code 0: every row of every column read is checked, and an error names the file, the data
row (1 = the first row after the header) and what to fix. Handled here once:

- a missing, empty or header-only file;
- a UTF-8 byte-order mark (spreadsheet exports) before the first column name;
- a row with more fields than the header: an architecture string with commas (the mobile spaces'
  `e6k3,...`) that was not quoted;
- a number that does not parse, is NaN or infinite, or (for latencies) is not positive.

Example:
    >>> import os, pathlib, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = pathlib.Path(path).write_text("arch,latency_ms\\na,1.5\\nb,-2\\n")
    >>> header, rows = read_csv(path, "latency file")
    >>> numbers(path, rows, "latency_ms", positive=True)
    Traceback (most recent call last):
    ...
    hwmodel.tables.InputError: ...t.csv, data row 2: latency_ms must be a positive number, got '-2'
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

import numpy as np


class InputError(ValueError):
    """Bad user input (missing file or column, malformed architecture, impossible size)."""


def read_csv(path: str, what: str = "table", hint: str = "") -> tuple[list[str], list[dict[str, str]]]:
    """`(header, rows)` of a CSV with a header and at least one data row."""
    if not os.path.isfile(path):
        raise InputError(f"{what} {path!r} not found{'; ' + hint if hint else ''}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: drop a byte-order mark
            reader = csv.DictReader(f)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{what} {path!r} is not a readable CSV file ({e})") from None
    if not header:
        raise InputError(f"{what} {path!r} is empty (expected a header row and data rows)")
    if not rows:
        raise InputError(f"{what} {path!r} has a header but no data rows")
    for i, r in enumerate(rows):
        if r.get(None):  # DictReader puts surplus fields under the key None
            raise InputError(f"{path}, data row {i + 1}: {len(header) + len(r[None])} fields for {len(header)} "
                             "columns; quote fields that contain commas (architecture strings of the "
                             "mobile spaces do: write them as \"e6k3,...\")")
    return header, rows


def require_columns(path: str, header: Sequence[str], columns: Sequence[str | None], flag: str = "") -> None:
    """Stops naming the missing column(s), how to choose another, and the file's columns."""
    missing = [c for c in columns if c is None or c not in header]
    if missing:
        named = ", ".join("(none found)" if c is None else repr(c) for c in missing)
        raise InputError(f"{path}: no column {named}{f' (choose one with {flag})' if flag else ''}; "
                         f"columns: {header}")


def numbers(path: str, rows: Sequence[dict[str, str]], column: str, positive: bool = False,
            nonnegative: bool = False, first_row: int = 1) -> np.ndarray:
    """The finite float values of `column` in every row (`positive`: > 0, `nonnegative`: >= 0);
    `first_row` is the data-row number of `rows[0]` in the file (for the message)."""
    out = np.empty(len(rows), np.float64)
    for i, r in enumerate(rows):
        text = r.get(column)
        try:
            v = float(text)
        except (TypeError, ValueError):
            raise InputError(f"{path}, data row {i + first_row}: {column} must be a number, got {text!r}") from None
        if not np.isfinite(v) or (positive and v <= 0) or (nonnegative and v < 0):
            need = "a positive number" if positive else "a number >= 0" if nonnegative else "a finite number"
            raise InputError(f"{path}, data row {i + first_row}: {column} must be {need}, got {text!r}")
        out[i] = v
    return out
