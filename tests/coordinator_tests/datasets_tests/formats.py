"""Small files in the exact on-disk formats of CIFAR-10 (binary version) and MNIST (IDX),
written by the tests: the real files cannot be downloaded here."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
MNIST = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def cifar_records(X: np.ndarray, y: np.ndarray) -> bytes:
    """Records of 1 label byte + 3072 pixel bytes (red, green, blue planes, row-major)."""
    return b"".join(bytes([int(label)]) + x.tobytes() for x, label in zip(X, y, strict=True))


def write_cifar(folder: Path, per_batch: int = 6, n_test: int = 8,
                seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A cifar-10-batches-bin folder; returns each file's (X (N,3,32,32), y)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for i, name in enumerate((*CIFAR_TRAIN, CIFAR_TEST)):
        n = n_test if name == CIFAR_TEST else per_batch
        X, y = images(rng, n, (3, 32, 32)), (np.arange(n) + i) % 10
        (folder / name).write_bytes(cifar_records(X, y))
        written[name] = (X, y)
    return written


def idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: 00 00 08 ndim, big-endian uint32 dims, the values."""
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_mnist(folder: Path, n_train: int = 12, n_test: int = 6, gz: bool = False,
                seed: int = 0, side: int = 28) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A folder of the four MNIST IDX files (gzipped with ``gz``); returns (X (N,H,W), y)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for part, n in (("train", n_train), ("test", n_test)):
        X = images(rng, n, (side, side))
        y = (np.arange(n, dtype=np.uint8) * 3) % 10
        for stem, array in zip(MNIST[part], (X, y), strict=True):
            data = idx_bytes(array)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(data, mtime=0))
            else:
                (folder / stem).write_bytes(data)
        written[part] = (X, y)
    return written
