"""Datasets with their own split (.npz parts, a mapping of CSV files): the given rows are
used exactly, a missing part is carved from the training rows by seed, test rows are
never seen by training or validation, and the blob's hash depends only on the source."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from coordinator.datasets import load_source
from worker.data import DatasetError, Parts, decode, encode, sha256, split
from worker.dataset_cache import DatasetCache


def blobs(n: int, seed: int, D: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return (rng.standard_normal((n, D)) + 3.0 * y[:, None]).astype(np.float32), y


TRAIN, VAL, TEST = blobs(80, 1), blobs(15, 2), blobs(20, 3)


def row_hashes(X: np.ndarray) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(r, np.float32).tobytes()).hexdigest() for r in X]


def write_csv(path: Path, X: np.ndarray, y: np.ndarray) -> str:
    lines = ["f0,f1,f2,f3,label"]
    lines += [",".join(repr(float(v)) for v in r) + f",{label}" for r, label in zip(X, y,
                                                                                 strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_given_test_rows_are_exact_and_unseen_by_training_and_validation(tmp_path) -> None:
    path = tmp_path / "own.npz"
    np.savez(path, X_train=TRAIN[0], y_train=TRAIN[1], X_test=TEST[0], y_test=TEST[1])
    parts = decode(encode(load_source(str(path))))  # through the stored blob, as workers do
    s = split(parts, seed=4, val_fraction=0.25, test_fraction=0.5, preprocess="none")
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (60, 20, 20)  # test_fraction unused
    assert row_hashes(s.X_test) == row_hashes(TEST[0])  # exactly those rows, in file order
    np.testing.assert_array_equal(s.y_test, TEST[1])
    seen = set(row_hashes(s.X_train)) | set(row_hashes(s.X_val))
    assert seen == set(row_hashes(TRAIN[0]))  # validation carved from the training rows only
    assert not seen & set(row_hashes(TEST[0]))
    again = split(parts, seed=4, val_fraction=0.25, preprocess="none")
    other = split(parts, seed=5, val_fraction=0.25, preprocess="none")
    np.testing.assert_array_equal(again.X_val, s.X_val)  # carved by seed
    assert row_hashes(other.X_val) != row_hashes(s.X_val)


def test_three_given_parts_are_used_as_given_in_order(tmp_path) -> None:
    path = tmp_path / "own.npz"
    np.savez(path, X_train=TRAIN[0], y_train=TRAIN[1], X_val=VAL[0], y_val=VAL[1],
             X_test=TEST[0], y_test=TEST[1])
    s = split(load_source(str(path)), seed=9, preprocess="none")
    for got, (X, y) in zip(((s.X_train, s.y_train), (s.X_val, s.y_val), (s.X_test, s.y_test)),
                           (TRAIN, VAL, TEST), strict=True):
        np.testing.assert_array_equal(got[0], X)
        np.testing.assert_array_equal(got[1], y)


def test_statistics_come_from_the_training_part_only(tmp_path) -> None:
    path = tmp_path / "own.npz"
    np.savez(path, X_train=TRAIN[0], y_train=TRAIN[1], X_val=VAL[0], y_val=VAL[1],
             X_test=TEST[0] + 100.0, y_test=TEST[1])
    parts = load_source(str(path))
    mean = TRAIN[0].astype(np.float64).mean(axis=0)
    std = TRAIN[0].astype(np.float64).std(axis=0)
    s = split(parts, seed=0)
    np.testing.assert_allclose(s.X_test, (TEST[0] + 100.0 - mean) / std, rtol=1e-5)
    m = split(parts, seed=0, preprocess="mean_image")
    np.testing.assert_allclose(m.X_val, VAL[0] - mean, rtol=1e-5, atol=1e-5)


def test_the_blob_hash_depends_only_on_the_source(tmp_path) -> None:
    own, flat, only_train = tmp_path / "own.npz", tmp_path / "flat.npz", tmp_path / "t.npz"
    np.savez(own, X_train=TRAIN[0], y_train=TRAIN[1], X_test=TEST[0], y_test=TEST[1])
    np.savez(flat, X=np.concatenate([TRAIN[0], TEST[0]]),
             y=np.concatenate([TRAIN[1], TEST[1]]))
    np.savez(only_train, X_train=TRAIN[0], y_train=TRAIN[1])
    first = sha256(encode(load_source(str(own))))
    assert sha256(encode(load_source(str(own)))) == first
    assert first != sha256(encode(load_source(str(flat))))  # the split is part of the data
    np.savez(flat, X=TRAIN[0], y=TRAIN[1])  # no val/test part: the X, y blob, same bytes
    assert encode(load_source(str(only_train))) == encode(load_source(str(flat)))


def test_labels_are_numbered_over_all_parts(tmp_path) -> None:
    path = tmp_path / "own.npz"
    y_train = np.array([3, 5] * 6)
    y_test = np.array([5, 7, 7])
    np.savez(path, X_train=np.ones((12, 2)), y_train=y_train, X_test=np.ones((3, 2)),
             y_test=y_test)
    parts = load_source(str(path))
    np.testing.assert_array_equal(parts.y, [0, 1] * 6)
    np.testing.assert_array_equal(parts.test[1], [1, 2, 2])
    assert parts.n_classes == 3


def test_csv_parts_by_mapping(tmp_path) -> None:
    spec = {"train": write_csv(tmp_path / "a.csv", *TRAIN),
            "test": write_csv(tmp_path / "c.csv", *TEST)}
    parts = load_source(spec)
    np.testing.assert_array_equal(parts.test[0], TEST[0])
    s = split(parts, seed=0, preprocess="none")
    assert row_hashes(s.X_test) == row_hashes(TEST[0])
    bad = dict(spec, val=str(tmp_path / "b.csv"))
    (tmp_path / "b.csv").write_text("1,2,3,4,0\n1,2,3,nan,1\n")
    with pytest.raises(DatasetError, match=r"b\.csv: X has 1 NaN .* line 2, column 4"):
        load_source(bad)
    (tmp_path / "b.csv").write_text("1,2,3,0\n1,2,3,1\n")
    with pytest.raises(DatasetError, match=r"val=b\.csv: .*b\.csv rows have shape \(3,\) but "
                                           r".*a\.csv rows have \(4,\)"):
        load_source(bad)


def _pair_missing(path: Path) -> None:
    np.savez(path, X_train=TRAIN[0], y_train=TRAIN[1], X_val=VAL[0])


def _both_forms(path: Path) -> None:
    np.savez(path, X=TRAIN[0], y=TRAIN[1], X_train=TRAIN[0], y_train=TRAIN[1])


def _test_without_train(path: Path) -> None:
    np.savez(path, X_test=TEST[0], y_test=TEST[1])


def _width_differs(path: Path) -> None:
    np.savez(path, X_train=TRAIN[0], y_train=TRAIN[1], X_test=TEST[0][:, :3], y_test=TEST[1])


def _empty_part(path: Path) -> None:
    np.savez(path, X_train=TRAIN[0], y_train=TRAIN[1], X_val=VAL[0][:0], y_val=VAL[1][:0])


@pytest.mark.parametrize(("write", "problem"), [
    (_pair_missing, "missing array 'y_val'"),
    (_both_forms, "holds both X/y and X_train/y_train"),
    (_test_without_train, "missing array 'X'; found: X_test, y_test"),
    (_width_differs, r"X_test rows have shape \(3,\) but X_train rows have \(4,\)"),
    (_empty_part, "X_val has no rows"),
])
def test_bad_own_splits_are_refused(tmp_path, write, problem) -> None:
    path = tmp_path / "own.npz"
    write(path)
    with pytest.raises(DatasetError, match=problem) as info:
        load_source(str(path))
    assert str(info.value).startswith(f"{path}: ")


def test_mixed_dtypes_are_stored_as_float32(tmp_path) -> None:
    path = tmp_path / "own.npz"
    X8 = np.arange(60 * 4, dtype=np.uint8).reshape(60, 4)
    np.savez(path, X_train=X8, y_train=np.arange(60) % 2, X_test=X8[:5].astype(np.float64),
             y_test=np.arange(5) % 2)
    parts = decode(encode(load_source(str(path))))
    assert parts.X.dtype == parts.test[0].dtype == np.float32


def test_image_splits_keep_their_shape_and_flatten_as_views() -> None:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(40, 3, 4, 4), dtype=np.uint8)
    parts = Parts(X, np.arange(40) % 4, test=(X[:6], np.arange(6) % 4))
    blob = encode(parts)
    cache = DatasetCache()
    s = cache.get(sha256(blob), 0, 0.2, 0.2, lambda sha: blob, "mean_image")
    assert s.input_shape == (3, 4, 4) and s.n_features == 48 and s.X_val.shape == (8, 3, 4, 4)
    np.testing.assert_allclose(s.X_train.mean(axis=0), 0.0, atol=1e-4)
    flat = s.flat()
    assert flat.X_train.shape == (32, 48) and np.shares_memory(flat.X_train, s.X_train)
    assert not flat.X_test.flags.writeable and flat.input_shape == (48,)
    raw = cache.get(sha256(blob), 0, 0.2, 0.2, lambda sha: blob, "none")  # its own entry
    np.testing.assert_array_equal(raw.X_test, X[:6].astype(np.float32))
    assert cache.get(sha256(blob), 0, 0.2, 0.2, lambda sha: blob, "mean_image") is s
