"""A comma-separated file: features, then the label in the last column; an optional header."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coordinator.datasets.files import read_file
from coordinator.datasets.validate import checked
from worker.data import DatasetError


def load_csv(name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """X and y of the file, checked (labels not yet renumbered); messages name lines."""
    X, y, lines = csv_arrays(name, read_file(path, name))
    return checked(name, X, y, where=lambda i: f"line {lines[i]}")


def csv_arrays(name: str, data: bytes) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """X, y and each row's 1-based line number from a comma-separated file."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{name}: not UTF-8 text (bad byte at offset {e.start})") from None
    rows = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if rows and not _is_numeric(rows[0][1]):
        header = rows.pop(0)[1]
        if rows and header.count(",") != rows[0][1].count(","):
            raise DatasetError(
                f"{name}: header has {header.count(',') + 1} columns but line {rows[0][0]} "
                f"has {rows[0][1].count(',') + 1}"
            )
    if not rows:
        raise DatasetError(f"{name}: no data rows")
    try:
        table = np.loadtxt([line for _, line in rows], delimiter=",", ndmin=2, comments=None)
    except ValueError as e:
        raise DatasetError(f"{name}: {_csv_problem(rows) or e}") from None
    if table.shape[1] < 2:
        raise DatasetError(f"{name}: needs at least 2 columns (features, then the label), got 1")
    return table[:, :-1], table[:, -1], [n for n, _ in rows]


def _is_numeric(line: str) -> bool:
    try:
        [float(field) for field in line.split(",")]
    except ValueError:
        return False
    return True


def _csv_problem(rows: list[tuple[int, str]]) -> str | None:
    """The first ragged row or non-number, by line and column, for a clear message."""
    width = rows[0][1].count(",") + 1
    for n, line in rows:
        fields = line.split(",")
        if len(fields) != width:
            return f"line {n} has {len(fields)} columns, expected {width}"
        for col, field in enumerate(fields, 1):
            try:
                float(field)
            except ValueError:
                return f"line {n}, column {col}: {field.strip()!r} is not a number"
    return None
