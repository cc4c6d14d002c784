"""MNIST's IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``):
the official 60,000 training and 10,000 test images. Fashion-MNIST uses the same
files and names.

An IDX file is a 4-byte magic number (two zero bytes, the data type — 0x08 for
unsigned bytes — and the number of dimensions), one big-endian uint32 per
dimension, then the values, row-major.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from coordinator.datasets.files import read_file
from coordinator.datasets.validate import validated
from worker.data import DatasetError, Parts

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
UBYTE = 0x08


def load_mnist(name: str, folder: Path) -> Parts:
    """The official split of a folder of MNIST IDX files: X uint8 (N, 1, 28, 28)."""
    if not folder.is_dir():
        raise DatasetError(f"{name}: not a folder; expected one holding "
                           f"{', '.join(f for pair in FILES.values() for f in pair)} (or .gz)")
    paths = {part: (_find(folder, images), _find(folder, labels))
             for part, (images, labels) in FILES.items()}  # every file is there before reading
    parts = {part: _images_and_labels(*pair) for part, pair in paths.items()}
    return validated(name, Parts(*parts["train"], test=parts["test"]))


def _images_and_labels(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    X = read_idx(images_path, ndim=3)
    y = read_idx(labels_path, ndim=1)
    if len(X) != len(y):
        raise DatasetError(f"{labels_path}: {len(y)} labels but {images_path} has {len(X)} "
                           "images")
    return X[:, None], y.astype(np.int64)  # (N, H, W) -> (N, 1, H, W)


def _find(folder: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` (also spelt with ``.idx`` for ``-idx``, as some mirrors do)."""
    dotted = stem.replace("-idx", ".idx")
    for candidate in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise DatasetError(f"{folder}: missing {stem} (or {stem}.gz)")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file; ``DatasetError`` naming the file and the byte offset
    (of the uncompressed bytes, for a .gz file) of what is wrong."""
    data = _uncompressed(path, read_file(path))
    if len(data) < 4:
        raise DatasetError(f"{path}: truncated at byte offset {len(data)}: the IDX header "
                           "needs 4 bytes")
    if data[:2] != b"\0\0":
        raise DatasetError(f"{path}: not an IDX file: bytes 0-1 are {data[:2].hex(' ')}, "
                           "expected 00 00")
    if data[2] != UBYTE:
        raise DatasetError(f"{path}: byte offset 2: data type 0x{data[2]:02x}, expected 0x08 "
                           "(unsigned byte)")
    if data[3] != ndim:
        raise DatasetError(f"{path}: byte offset 3: {data[3]} dimensions, expected {ndim}")
    start = 4 + 4 * ndim
    if len(data) < start:
        raise DatasetError(f"{path}: truncated at byte offset {len(data)}: the header needs "
                           f"{start} bytes")
    dims = struct.unpack(f">{ndim}I", data[4:start])
    end = start + int(np.prod(dims))
    if len(data) < end:
        raise DatasetError(f"{path}: truncated at byte offset {len(data)}: the header's shape "
                           f"{dims} needs {end} bytes")
    if len(data) > end:
        raise DatasetError(f"{path}: {len(data) - end} unexpected bytes after the data, from "
                           f"byte offset {end}")
    return np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start).reshape(dims)


def _uncompressed(path: Path, data: bytes) -> bytes:
    if data[:2] != b"\x1f\x8b":  # the gzip magic: a file is unpacked by content, not by name
        return data
    try:
        return gzip.decompress(data)
    except EOFError:
        raise DatasetError(f"{path}: truncated gzip stream at byte offset {len(data)} (of the "
                           "compressed file)") from None
    except (OSError, zlib.error) as e:
        raise DatasetError(f"{path}: corrupt gzip data: {e}") from None
