"""CIFAR-10, binary version (``cifar-10-batches-bin``): ``data_batch_1.bin`` …
``data_batch_5.bin`` are the official training rows, ``test_batch.bin`` the test
rows. Each file is a run of 3,073-byte records: one label byte (0-9), then 3,072
pixel bytes — the 1,024 red, then green, then blue values of a 32x32 image, row by row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coordinator.datasets.files import read_file
from coordinator.datasets.validate import validated
from worker.data import DatasetError, Parts

SHAPE = (3, 32, 32)  # C, H, W
RECORD = 1 + 3 * 32 * 32
N_CLASSES = 10
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"


def load_cifar10(name: str, folder: Path) -> Parts:
    """The official split of a ``cifar-10-batches-bin`` folder: X uint8 (N, 3, 32, 32)."""
    if not folder.is_dir():
        raise DatasetError(f"{name}: not a folder; expected cifar-10-batches-bin holding "
                           f"{', '.join(TRAIN_FILES)} and {TEST_FILE}")
    missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not (folder / f).is_file()]
    if missing:
        raise DatasetError(f"{name}: missing {', '.join(missing)} in {folder}")
    train = [read_batch(folder / f) for f in TRAIN_FILES]
    X = np.concatenate([X for X, _ in train])
    y = np.concatenate([y for _, y in train])
    return validated(name, Parts(X, y, test=read_batch(folder / TEST_FILE)))


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """X uint8 (N, 3, 32, 32) and y (N,) of one batch file; ``DatasetError`` naming the
    file and the byte offset of a truncated record or a bad label."""
    data = read_file(path)
    n, extra = divmod(len(data), RECORD)
    if n == 0 or extra:
        raise DatasetError(
            f"{path}: truncated record at byte offset {n * RECORD}: the file has {len(data)} "
            f"bytes, not a positive multiple of {RECORD} (1 label byte + 3072 pixel bytes)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(n, RECORD)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= N_CLASSES)
    if len(bad):
        i = int(bad[0])
        raise DatasetError(f"{path}: label byte {labels[i]} at byte offset {i * RECORD} is not "
                           f"a CIFAR-10 class (0-{N_CLASSES - 1})")
    X = records[:, 1:].reshape(n, *SHAPE)  # (N, 3072) -> (N, C, H, W): colour planes, rows
    return np.ascontiguousarray(X), labels.astype(np.int64)
