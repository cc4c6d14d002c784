"""Reading a sweep's dataset at launch: the user's files become checked ``Parts``,
which ``worker.data.encode`` turns into the stored blob. Workers never read files.

A dataset is named by ``spec``:

- ``digits`` or ``spiral``: built in;
- a path to a ``.npz`` (``X, y``, or its own split ``X_train, y_train`` with optional
  ``X_val, y_val``, ``X_test, y_test``) or a ``.csv`` (last column the label);
- ``cifar10:FOLDER`` (the binary ``cifar-10-batches-bin``) or ``mnist:FOLDER`` (IDX
  files), with their official train/test split;
- a mapping ``{train: FILE, val: FILE, test: FILE}`` (``val`` and ``test``
  optional) of ``.csv`` or ``.npz`` (``X, y``) files, one per part.

A part the source does not give is carved from its training rows at split time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from coordinator.datasets.builtin import load_digits, load_spiral, spiral
from coordinator.datasets.cifar import load_cifar10
from coordinator.datasets.csv import load_csv
from coordinator.datasets.files import read_file
from coordinator.datasets.mnist import load_mnist
from coordinator.datasets.npz import load_npz
from coordinator.datasets.spec import BUILTIN_NAMES, FOLDER_PREFIXES, PART_NAMES
from coordinator.datasets.validate import checked, combined
from worker.data import DatasetError, Parts, read_npz

__all__ = ["DatasetError", "Parts", "describe", "load_source", "spiral"]

BUILTIN: dict[str, Callable[[], Parts]] = {"digits": load_digits, "spiral": load_spiral}
FOLDER_FORMATS: dict[str, Callable[[str, Path], Parts]] = {"cifar10": load_cifar10,
                                                           "mnist": load_mnist}
assert tuple(BUILTIN) == BUILTIN_NAMES and tuple(FOLDER_FORMATS) == FOLDER_PREFIXES


def load_source(spec: str | Mapping[str, str]) -> Parts:
    """Load and check a dataset: X float32 or its own 8/16-bit integer dtype, shaped
    (N, D) or (N, C, H, W); y int64 with labels 0..C-1 (numbered over all parts).

    Raises ``DatasetError`` naming the dataset (the file, and the line or byte offset
    where that helps) and what is wrong with it.
    """
    if isinstance(spec, Mapping):
        return _load_parts(spec)
    if spec in BUILTIN:
        return BUILTIN[spec]()
    fmt, sep, folder = spec.partition(":")
    if sep and fmt in FOLDER_FORMATS:
        return FOLDER_FORMATS[fmt](spec, Path(folder))
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(spec, path)
    if suffix == ".csv":
        X, y = load_csv(spec, path)
        return combined(spec, {"": (X, y)})
    raise DatasetError(
        f"{spec}: unknown dataset; expected {' or '.join(BUILTIN)}, a path to a .npz or .csv "
        f"file, or {' or '.join(f'{f}:FOLDER' for f in FOLDER_FORMATS)}")


def _load_parts(spec: Mapping[str, str]) -> Parts:
    name = describe(spec)
    unknown = sorted(set(spec) - set(PART_NAMES))
    if unknown or "train" not in spec:
        raise DatasetError(f"{name}: expected parts train (required), val, test; got "
                           f"{', '.join(map(str, spec))}")
    named = {part: _one_file(spec[part]) for part in PART_NAMES if part in spec}
    return combined(name, named, labels={part: spec[part] for part in named})


def _one_file(spec: str) -> tuple[Any, Any]:
    """X, y of one part's file (a .csv, or an .npz holding ``X, y``), checked."""
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_csv(spec, path)
    if suffix != ".npz":
        raise DatasetError(f"{spec}: unsupported file type {suffix!r}; expected .npz or .csv")
    parts = read_npz(spec, read_file(path, spec))
    if parts.val is not None or parts.test is not None:
        raise DatasetError(f"{spec}: holds its own split; as one part of a dataset it must "
                           "hold X and y")
    return checked(spec, parts.X, parts.y)


def describe(spec: str | Mapping[str, str]) -> str:
    """A short name for the ``datasets`` table: the file or folder name."""
    if isinstance(spec, Mapping):
        return "+".join(f"{part}={Path(str(f)).name}" for part, f in spec.items())
    fmt, sep, folder = spec.partition(":")
    if sep and fmt in FOLDER_FORMATS:
        return f"{fmt}:{Path(folder).name}"
    return Path(spec).name

