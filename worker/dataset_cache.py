"""The per-process dataset cache: a worker's splits by (dataset, seed, fractions,
preprocess), and the dataset blobs behind them, fetched by hash, verified, and kept in an
optional directory that a host's worker processes share."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from worker.data import DatasetError, Splits, decode, sha256, split
from worker.defaults import PREPROCESS

log = logging.getLogger(__name__)

_SHA_RE = re.compile(r"[0-9a-f]{64}")


class DatasetCache:
    """Per-process splits by (sha, seed, fractions, preprocessing), backed by an optional
    shared directory.

    On a miss the dataset's bytes come from ``directory/<sha>.npz`` when present
    and intact, else from ``fetch(sha)`` (the database), verified against the
    hash and written to the directory with an atomic rename, so several worker
    processes of one host can share it. Keeps the ``max_splits`` most recently
    used splits in memory. Not thread-safe: one per worker process.
    """

    def __init__(self, directory: Path | None = None, max_splits: int = 4) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.max_splits = max_splits
        self._splits: OrderedDict[tuple[str, int, float, float, str], Splits] = OrderedDict()

    def get(
        self,
        sha: str,
        seed: int,
        val_fraction: float,
        test_fraction: float,
        fetch: Callable[[str], bytes],
        preprocess: str = PREPROCESS,
    ) -> Splits:
        """The split of dataset ``sha`` for ``seed``, decoding and splitting only on a miss."""
        key = (sha, int(seed), float(val_fraction), float(test_fraction), preprocess)
        if key in self._splits:
            self._splits.move_to_end(key)
            return self._splits[key]
        parts = decode(self._blob(sha, fetch), name=f"dataset {sha}")
        splits = split(parts, seed, val_fraction, test_fraction, preprocess)
        self._splits[key] = splits
        while len(self._splits) > self.max_splits:
            self._splits.popitem(last=False)
        return splits

    def _blob(self, sha: str, fetch: Callable[[str], bytes]) -> bytes:
        if not _SHA_RE.fullmatch(sha):  # also keeps a forged hash from naming another path
            raise DatasetError(f"dataset {sha!r}: not a sha256 hex digest")
        cached = self._read_cached(sha)
        if cached is not None:
            return cached
        data = fetch(sha)
        if data is None:
            raise DatasetError(f"dataset {sha}: not found in the database")
        data = bytes(data)
        got = sha256(data)
        if got != sha:
            raise DatasetError(f"dataset {sha}: fetched bytes have sha256 {got}; blob is corrupt")
        self._write_cached(sha, data)
        return data

    def _read_cached(self, sha: str) -> bytes | None:
        if self.directory is None:
            return None
        path = self.directory / f"{sha}.npz"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if sha256(data) == sha:
            return data
        log.warning("dataset cache file %s is corrupt; fetching it again", path)
        path.unlink(missing_ok=True)
        return None

    def _write_cached(self, sha: str, data: bytes) -> None:
        """Write via a temporary file and rename: readers see all of the file or none of it."""
        if self.directory is None:
            return
        tmp = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{sha}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.directory / f"{sha}.npz")
        except OSError as e:  # the cache only saves time; the trial can go on without it
            log.warning("cannot write dataset cache in %s: %s", self.directory, e)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
