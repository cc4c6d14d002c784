"""A user's ``.npz``: ``X, y``, or its own split ``X_train, y_train`` with optional
``X_val, y_val`` and ``X_test, y_test``; read without pickle."""

from __future__ import annotations

from pathlib import Path

from coordinator.datasets.files import read_file
from coordinator.datasets.validate import validated
from worker.data import Parts, read_npz


def load_npz(name: str, path: Path) -> Parts:
    """The file's parts, checked; ``DatasetError`` naming the file and the problem."""
    return validated(name, read_npz(name, read_file(path, name)))
