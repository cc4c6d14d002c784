"""Checkpoint bytes: a flat dict of arrays as ``.npz`` plus a SHA-256 trailer.

Layout: the npz archive (what ``np.savez`` writes: one ``<key>.npy`` entry per
array) followed by the 32-byte SHA-256 digest of those archive bytes. ``decode``
checks the digest before parsing and loads with ``allow_pickle=False``, so a
truncated, corrupted or hostile blob raises ``CheckpointError`` and can never
run code. Entries carry a fixed timestamp, so equal arrays give equal bytes.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib

import numpy as np

DIGEST_SIZE = 32  # SHA-256
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: deterministic output
# What np.load raises on bytes that are not a well-formed archive of plain arrays
# (an object array needs pickle and is refused with ValueError).
_LOAD_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile)


class CheckpointError(ValueError):
    """The bytes are not a checkpoint this code wrote, or not for this trial."""


_DOS_DATE, _DOS_TIME = 0x21, 0  # _ZIP_DATE in the zip format's DOS fields
_SMALL = 0xFFFF_FFFF  # beyond this size, offset or entry count a zip needs zip64 records


def encode(arrays: dict[str, np.ndarray]) -> bytes:
    """The checkpoint bytes of ``arrays`` (numeric, bool or unicode; never objects).

    Raises ``ValueError`` for an object array, which would need pickle.
    """
    members = []
    for key, value in arrays.items():
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
        members.append((f"{key}.npy".encode(), buf.getbuffer()))
    total = sum(len(name) + len(data) + 30 for name, data in members)
    body = _stored_zip(members) if total < _SMALL and len(members) < 0xFFFF else \
        _zip64(members)
    return body + hashlib.sha256(body).digest()


def _stored_zip(members: list[tuple[bytes, memoryview]]) -> bytes:
    """A plain uncompressed zip archive of ``members`` (what ``np.load`` reads), written
    directly: ``zipfile`` costs ~10 us per member, half of a small network's checkpoint."""
    out, central = io.BytesIO(), []
    for name, data in members:
        crc, size, offset = zlib.crc32(data), len(data), out.tell()
        flags = 0 if name.isascii() else 0x800  # UTF-8 names
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, 0, _DOS_TIME, _DOS_DATE,
                              crc, size, size, len(name), 0))
        out.write(name)
        out.write(data)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, 0,
                                   _DOS_TIME, _DOS_DATE, crc, size, size, len(name), 0, 0, 0,
                                   0, 0, offset) + name)
    start = out.tell()
    for entry in central:
        out.write(entry)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                          out.tell() - start, start, 0))
    return out.getvalue()


def _zip64(members: list[tuple[bytes, memoryview]]) -> bytes:
    """The same archive through ``zipfile``, with zip64 records (checkpoints over 4 GiB)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name.decode(), date_time=_ZIP_DATE)
            with zf.open(info, "w", force_zip64=True) as f:
                f.write(data)
    return buf.getvalue()


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
