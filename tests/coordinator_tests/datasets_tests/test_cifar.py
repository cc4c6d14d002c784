"""CIFAR-10's binary version: the official split, shapes, labels and pixel layout, and
truncated or malformed files refused naming the file and the byte offset."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.datasets import load_source
from tests.coordinator_tests.datasets_tests.formats import CIFAR_TEST, CIFAR_TRAIN, write_cifar
from worker.data import DatasetError, decode, encode, split


def test_a_cifar_folder_loads_with_the_official_split(tmp_path) -> None:
    written = write_cifar(tmp_path / "cifar-10-batches-bin")
    parts = load_source(f"cifar10:{tmp_path / 'cifar-10-batches-bin'}")
    assert parts.X.shape == (30, 3, 32, 32) and parts.X.dtype == np.uint8
    assert parts.val is None
    X_test, y_test = parts.test
    assert X_test.shape == (8, 3, 32, 32) and X_test.dtype == np.uint8
    # training rows: data_batch_1 .. data_batch_5, in that order; test rows: test_batch
    np.testing.assert_array_equal(parts.X, np.concatenate([written[f][0] for f in CIFAR_TRAIN]))
    np.testing.assert_array_equal(parts.y, np.concatenate([written[f][1] for f in CIFAR_TRAIN]))
    np.testing.assert_array_equal(X_test, written[CIFAR_TEST][0])
    np.testing.assert_array_equal(y_test, written[CIFAR_TEST][1])
    assert parts.n_classes == 10 and parts.input_shape == (3, 32, 32)


def test_pixels_are_channel_planes_of_rows(tmp_path) -> None:
    folder = tmp_path / "c"
    write_cifar(folder)
    raw = (folder / "data_batch_2.bin").read_bytes()
    parts = load_source(f"cifar10:{folder}")
    record = 1  # the second record of data_batch_2 is training row 6 + 1
    start = record * 3073
    c, h, w = 2, 5, 31  # blue plane, row 5, column 31
    assert parts.X[6 + record, c, h, w] == raw[start + 1 + c * 1024 + h * 32 + w]
    assert parts.y[6 + record] == raw[start]


def test_blob_keeps_uint8_and_the_split_keeps_the_official_test_rows(tmp_path) -> None:
    folder = tmp_path / "c"
    write_cifar(folder)
    parts = load_source(f"cifar10:{folder}")
    blob = encode(parts)
    raw = sum(X.nbytes + y.nbytes for X, y in parts.named().values())
    assert len(blob) <= 1.05 * raw
    back = decode(blob)
    assert back.X.dtype == np.uint8 and back.test[0].shape == (8, 3, 32, 32)
    s = split(back, seed=1, val_fraction=0.2, preprocess="none")
    assert s.input_shape == (3, 32, 32) and s.n_features == 3072
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (24, 6, 8)
    np.testing.assert_array_equal(s.X_test, parts.test[0].astype(np.float32))


def _truncate(folder, name, keep):  # type: ignore[no-untyped-def]
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[:keep])


@pytest.mark.parametrize(("name", "damage", "problem"), [
    ("data_batch_3.bin", lambda p: _truncate(p.parent, p.name, 2 * 3073 + 100),
     "truncated record at byte offset 6146: the file has 6246 bytes"),
    ("test_batch.bin", lambda p: p.write_bytes(b""), "truncated record at byte offset 0"),
    ("data_batch_5.bin", lambda p: p.write_bytes(p.read_bytes()[:3073 * 4]
                                                 + b"\x0b" + p.read_bytes()[3073 * 4 + 1:]),
     "label byte 11 at byte offset 12292 is not a CIFAR-10 class"),
])
def test_truncated_or_malformed_batches_name_file_and_offset(tmp_path, name, damage,
                                                             problem) -> None:
    folder = tmp_path / "c"
    write_cifar(folder)
    damage(folder / name)
    with pytest.raises(DatasetError, match=problem) as info:
        load_source(f"cifar10:{folder}")
    assert str(info.value).startswith(f"{folder / name}: ")


def test_missing_batches_and_folders_are_named(tmp_path) -> None:
    folder = tmp_path / "c"
    write_cifar(folder)
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(DatasetError, match=r"missing data_batch_4\.bin"):
        load_source(f"cifar10:{folder}")
    with pytest.raises(DatasetError, match="not a folder"):
        load_source(f"cifar10:{tmp_path / 'nope'}")
