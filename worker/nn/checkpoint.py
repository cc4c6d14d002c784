"""Checkpoint bytes: a flat dict of arrays as ``.npz`` plus a SHA-256 trailer.

Layout: the npz archive (what ``np.savez`` writes: one ``<key>.npy`` entry per
array; ``worker.npzio`` writes it, equal arrays giving equal bytes) followed by the
32-byte SHA-256 digest of those archive bytes. ``decode`` checks the digest before
parsing and loads with ``allow_pickle=False``, so a truncated, corrupted or hostile
blob raises ``CheckpointError`` and can never run code.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np

from worker.npzio import npz_bytes

DIGEST_SIZE = 32  # SHA-256
# What np.load raises on bytes that are not a well-formed archive of plain arrays
# (an object array needs pickle and is refused with ValueError).
_LOAD_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile)


class CheckpointError(ValueError):
    """The bytes are not a checkpoint this code wrote, or not for this trial."""


def encode(arrays: dict[str, np.ndarray]) -> bytes:
    """The checkpoint bytes of ``arrays`` (numeric, bool or unicode; never objects).

    Raises ``ValueError`` for an object array, which would need pickle.
    """
    body = npz_bytes(arrays)
    return body + hashlib.sha256(body).digest()


def decode(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of checkpoint ``data``; raises ``CheckpointError`` on any mismatch."""
    data = bytes(data)
    if len(data) <= DIGEST_SIZE:
        raise CheckpointError(f"checkpoint too short ({len(data)} bytes)")
    body, digest = data[:-DIGEST_SIZE], data[-DIGEST_SIZE:]
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError("checkpoint checksum mismatch (corrupted or truncated)")
    try:
        loaded = np.load(io.BytesIO(body), allow_pickle=False)
    except _LOAD_ERRORS as e:
        raise CheckpointError(f"malformed checkpoint: {e}") from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise CheckpointError("checkpoint is not an npz archive")
    try:
        with loaded as npz:
            return {key: npz[key] for key in npz.files}
    except _LOAD_ERRORS as e:
        raise CheckpointError(f"malformed checkpoint entry: {e}") from e
