"""MNIST's IDX files, plain and gzipped: the official split, (N, 1, 28, 28) uint8 images,
and truncated or malformed files refused naming the file and the byte offset."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from coordinator.datasets import load_source
from tests.coordinator_tests.datasets_tests.formats import idx_bytes, write_mnist
from worker.data import DatasetError


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_idx_files_load_with_the_official_split(tmp_path, gz) -> None:
    written = write_mnist(tmp_path, gz=gz)
    parts = load_source(f"mnist:{tmp_path}")
    assert parts.X.shape == (12, 1, 28, 28) and parts.X.dtype == np.uint8
    assert parts.input_shape == (1, 28, 28) and parts.val is None
    np.testing.assert_array_equal(parts.X[:, 0], written["train"][0])
    np.testing.assert_array_equal(parts.y, written["train"][1])
    X_test, y_test = parts.test
    assert X_test.shape == (6, 1, 28, 28)
    np.testing.assert_array_equal(X_test[:, 0], written["test"][0])
    np.testing.assert_array_equal(y_test, written["test"][1])


def test_plain_and_gzipped_files_are_the_same_dataset(tmp_path) -> None:
    write_mnist(tmp_path / "plain")
    write_mnist(tmp_path / "gz", gz=True)
    a, b = load_source(f"mnist:{tmp_path / 'plain'}"), load_source(f"mnist:{tmp_path / 'gz'}")
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.test[1], b.test[1])


IMAGES = "train-images-idx3-ubyte"
LABELS = "t10k-labels-idx1-ubyte"


def _set(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + bytes([value]) + data[offset + 1:]


@pytest.mark.parametrize(("name", "damage", "problem"), [
    (IMAGES, lambda d: d[:3], "truncated at byte offset 3: the IDX header needs 4 bytes"),
    (IMAGES, lambda d: d[:10], "truncated at byte offset 10: the header needs 16 bytes"),
    (IMAGES, lambda d: d[:-5], r"truncated at byte offset 9419: the header's shape "
                               r"\(12, 28, 28\) needs 9424 bytes"),
    (IMAGES, lambda d: d + b"\0\0", "2 unexpected bytes after the data, from byte offset 9424"),
    (IMAGES, lambda d: _set(d, 0, 1), "not an IDX file: bytes 0-1 are 01 00"),
    (IMAGES, lambda d: _set(d, 2, 0x0D), "byte offset 2: data type 0x0d, expected 0x08"),
    (IMAGES, lambda d: _set(d, 3, 2), "byte offset 3: 2 dimensions, expected 3"),
    (LABELS, lambda d: d[:-1], "truncated at byte offset 13"),
])
def test_malformed_idx_files_name_file_and_offset(tmp_path, name, damage, problem) -> None:
    write_mnist(tmp_path)
    path = tmp_path / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetError, match=problem) as info:
        load_source(f"mnist:{tmp_path}")
    assert str(info.value).startswith(f"{path}: ")


def test_truncated_gzip_and_mismatched_counts(tmp_path) -> None:
    write_mnist(tmp_path, gz=True)
    path = tmp_path / f"{IMAGES}.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=rf"truncated gzip stream at byte offset "
                                           rf"{len(data) // 2}") as info:
        load_source(f"mnist:{tmp_path}")
    assert str(info.value).startswith(f"{path}: ")
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((5, 28, 28), np.uint8))))
    with pytest.raises(DatasetError, match=r"12 labels but .* has 5 images"):
        load_source(f"mnist:{tmp_path}")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="missing t10k-labels-idx1-ubyte"):
        load_source(f"mnist:{tmp_path}")
