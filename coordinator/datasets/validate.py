"""Checks on a dataset's arrays before they are stored: shapes, finite numbers, integer
labels, and one class numbering across the source's parts."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from worker.data import DatasetError, Parts, check_shapes, is_small_int, member_keys

MIN_ROWS = 10  # enough for at least one row in each of train, validation and test
Where = Callable[[int], str]


def row(i: int) -> str:
    return f"row {i}"


def validated(name: str, parts: Parts, where: Where = row) -> Parts:
    """Check every part of ``parts`` (one source, named ``name``) and number its classes."""
    named = {part: checked(name, X, y, part, where) for part, (X, y) in parts.named().items()}
    return combined(name, named)


def checked(name: str, X: np.ndarray, y: np.ndarray, part: str = "",
            where: Where = row) -> tuple[np.ndarray, np.ndarray]:
    """X (N, ...) in its own dtype when float32 holds every value of it exactly (8- and
    16-bit integers, e.g. images: stored at their size, converted by ``split``), else
    float32 and finite; y as int64 (not yet renumbered). ``where`` names a row in
    messages (a CSV file names its line)."""
    X, y = np.asarray(X), np.asarray(y)
    check_shapes(name, X, y, part)
    y = _integer_labels(name, y, where, member_keys(part)[1])
    if is_small_int(X.dtype):
        return np.ascontiguousarray(X, dtype=X.dtype.newbyteorder("<")), y
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
        X = np.ascontiguousarray(X, dtype=np.float32)
    bad = ~np.isfinite(X)
    if bad.any():
        first = np.argwhere(bad)[0]
        at = (f"column {int(first[1]) + 1}" if X.ndim == 2
              else f"position {tuple(int(i) for i in first[1:])}")
        raise DatasetError(
            f"{name}: {member_keys(part)[0]} has {int(bad.sum())} NaN or infinite values (or "
            f"beyond float32), first at {where(int(first[0]))}, {at}")
    return X, y


def combined(name: str, named: Mapping[str, tuple[np.ndarray, np.ndarray]],
             labels: Mapping[str, str] | None = None) -> Parts:
    """One ``Parts`` from checked parts keyed ``""`` or ``train``/``val``/``test``: the
    same row shape and X dtype everywhere, labels renumbered 0..C-1 in sorted order
    over all parts (the smallest becomes 0). ``labels`` names parts in messages."""
    labels = labels or {p: member_keys(p)[0] for p in named}
    first = next(iter(named))
    for part, (X, _) in named.items():
        if X.shape[1:] != named[first][0].shape[1:]:
            raise DatasetError(f"{name}: {labels[part]} rows have shape {X.shape[1:]} but "
                               f"{labels[first]} rows have {named[first][0].shape[1:]}")
        if len(X) == 0:
            raise DatasetError(f"{name}: {labels[part]} has no rows")
    dtypes = {X.dtype for X, _ in named.values()}
    dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float32)
    classes = np.unique(np.concatenate([y for _, y in named.values()]))
    if len(classes) < 2:
        raise DatasetError(f"{name}: needs at least 2 classes, found 1 (label {classes[0]})")
    n_rows = sum(len(y) for _, y in named.values())
    if n_rows < MIN_ROWS:
        raise DatasetError(f"{name}: needs at least {MIN_ROWS} rows to split into train, "
                           f"validation and test, got {n_rows}")
    out = {part: (X.astype(dtype, copy=False), np.searchsorted(classes, y).astype(np.int64))
           for part, (X, y) in named.items()}
    return Parts.of(out)


def _integer_labels(name: str, y: np.ndarray, where: Where, key: str) -> np.ndarray:
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind != "f":
        raise DatasetError(f"{name}: {key} must hold integer class labels, got dtype {y.dtype}")
    bad = ~np.isfinite(y) | (y != np.round(y))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DatasetError(f"{name}: {key} must hold integer class labels; {where(i)} has "
                           f"{y[i]:g}")
    return y.astype(np.int64)
