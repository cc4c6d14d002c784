"""Reading a user's dataset file: the one place that opens it (at launch, never on a worker)."""

from __future__ import annotations

from pathlib import Path

from worker.data import DatasetError


def read_file(path: Path, name: str | None = None) -> bytes:
    """The bytes of ``path``; ``DatasetError`` naming it when missing or unreadable."""
    name = name or str(path)
    if not path.exists():
        raise DatasetError(f"{name}: file not found")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{name}: cannot read file: {e.strerror or e}") from None
