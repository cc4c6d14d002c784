"""One deterministic ``.npz`` writer for every archive hpsweep makes (dataset blobs,
checkpoints): equal arrays give equal bytes, on any machine, at any time.

The archive is what ``np.savez`` writes (one uncompressed ``<key>.npy`` member per
array, loadable with ``allow_pickle=False``) with a fixed member timestamp, Unix
as the creating system and mode 0644 — exactly the bytes ``zipfile`` writes for
such members, so a dataset's content hash is the same as with earlier releases.
Pure NumPy and the standard library: ``worker/nn`` may import it.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp
_DOS_DATE, _DOS_TIME = 0x21, 0  # ZIP_DATE in the zip format's DOS fields
_MADE_BY = 20 | 3 << 8  # zip spec 2.0, on Unix: what zipfile writes on Linux and macOS
_MODE = 0o644 << 16  # Unix permissions in the high half of the external attributes
_SMALL = 0xFFFF_FFFF  # beyond this size, offset or entry count a zip needs zip64 records


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The ``.npz`` bytes of ``arrays`` (numeric, bool or unicode; never objects), in
    the mapping's order.

    Raises ``ValueError`` for an object array, which would need pickle.
    """
    members = []
    for key, value in arrays.items():
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
        members.append((f"{key}.npy".encode(), buf.getbuffer()))
    total = sum(len(name) + len(data) + 30 for name, data in members)
    if total < _SMALL and len(members) < 0xFFFF:
        return _stored_zip(members)
    return _zip64(members)


def _stored_zip(members: list[tuple[bytes, memoryview]]) -> bytes:
    """A plain uncompressed zip archive of ``members``, written directly: ``zipfile``
    costs ~10 us per member, half of a small network's checkpoint."""
    out, central = io.BytesIO(), []
    for name, data in members:
        crc, size, offset = zlib.crc32(data), len(data), out.tell()
        flags = 0 if name.isascii() else 0x800  # UTF-8 names
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, 0, _DOS_TIME, _DOS_DATE,
                              crc, size, size, len(name), 0))
        out.write(name)
        out.write(data)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, _MADE_BY, 20, flags, 0,
                                   _DOS_TIME, _DOS_DATE, crc, size, size, len(name), 0, 0, 0,
                                   0, _MODE, offset) + name)
    start = out.tell()
    for entry in central:
        out.write(entry)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                          out.tell() - start, start, 0))
    return out.getvalue()


def _zip64(members: list[tuple[bytes, memoryview]]) -> bytes:
    """The same archive through ``zipfile``, with zip64 records (archives over 4 GiB)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name.decode(), date_time=ZIP_DATE)
            info.create_system, info.external_attr = 3, _MODE
            with zf.open(info, "w", force_zip64=True) as f:
                f.write(data)
    return buf.getvalue()
