"""Datasets on the worker: deterministic bytes, splits and the cache."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest

from coordinator.datasets import load_source
from worker.data import DatasetError, Parts, decode, encode, sha256, split
from worker.dataset_cache import DatasetCache


def blobs(n: int = 60, D: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.standard_normal((n, D)) + y[:, None] * 2.0
    return X, y


# ---------------------------------------------------------------- bytes


def test_encode_is_deterministic_and_decodes_back(monkeypatch):
    spiral = load_source("spiral")
    X, y = spiral.X, spiral.y
    data = encode(Parts(X, y))
    # a later clock must not change the bytes (np.savez stamps members with the time)
    monkeypatch.setattr(time, "localtime", lambda *_: (2031, 7, 4, 12, 30, 10, 4, 185, 0))
    assert encode(Parts(X, y)) == data
    # the bytes depend on values only, not on dtype or memory layout
    assert encode(Parts(np.asfortranarray(X.astype(np.float64)), y.astype(np.int32))) == data
    back = decode(data)
    X2, y2 = back.X, back.y
    assert back.val is None and back.test is None
    assert X2.dtype == np.float32 and y2.dtype == np.int64 and X2.flags.c_contiguous
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    assert sha256(data) == sha256(bytes(data)) != sha256(encode(Parts(X[1:], y[1:])))
    assert len(sha256(data)) == 64


def test_decode_refuses_garbage_and_bad_shapes(tmp_path):
    with pytest.raises(DatasetError, match=r"^blob 7: not an \.npz archive"):
        decode(b"garbage", name="blob 7")
    path = tmp_path / "x.npz"
    np.savez(path, X=np.zeros((4, 2)), y=np.zeros(5, dtype=np.int64))
    with pytest.raises(DatasetError, match="X has 4 rows but y has 5 labels"):
        decode(path.read_bytes())
    np.savez(path, X=np.zeros((4, 2)), y=np.zeros(4))
    with pytest.raises(DatasetError, match="integer class labels"):
        decode(path.read_bytes())
    np.savez(path, X=np.zeros((4, 2), dtype=object), y=np.zeros(4, dtype=np.int64))
    with pytest.raises(DatasetError, match="object array"):
        decode(path.read_bytes())


# ---------------------------------------------------------------- splits


def test_split_sizes_are_disjoint_and_cover_every_row():
    X, _ = blobs(n=100)
    ids = np.arange(100)  # labels double as row ids: split leaves them untouched
    s = split(Parts(X, ids), seed=3)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (72, 14, 14)
    everything = np.concatenate([s.y_train, s.y_val, s.y_test])
    np.testing.assert_array_equal(np.sort(everything), ids)
    assert s.n_features == 3 and s.n_classes == 100
    tiny = split(Parts(X[:10], ids[:10]), seed=0, val_fraction=0.01, test_fraction=0.2)
    assert (len(tiny.y_train), len(tiny.y_val), len(tiny.y_test)) == (7, 1, 2)


def test_split_is_deterministic_by_seed():
    X, y = blobs()
    a, b, c = split(Parts(X, y), seed=5), split(Parts(X, y), seed=5), split(Parts(X, y), seed=6)
    for name in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.X_train, c.X_train)


def test_split_standardises_with_training_statistics_only():
    rng = np.random.default_rng(1)
    X = rng.normal(loc=[5.0, -3.0, 0.0], scale=[2.0, 0.1, 1.0], size=(200, 3))
    X[:, 2] = 7.0  # constant feature: std counts as 1, so it becomes 0, not NaN
    ids = np.arange(200)
    s = split(Parts(X, ids), seed=0, val_fraction=0.2, test_fraction=0.2)
    np.testing.assert_allclose(s.X_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(s.X_train[:, :2].std(axis=0), 1.0, atol=1e-5)
    assert not s.X_train[:, 2].any()
    train = X[s.y_train]
    for X_part, part_ids in ((s.X_val, s.y_val), (s.X_test, s.y_test)):
        std = train.std(axis=0)
        std[2] = 1.0
        expected = (X[part_ids] - train.mean(axis=0)) / std
        np.testing.assert_allclose(X_part, expected, rtol=1e-5, atol=1e-5)
    assert abs(s.X_val[:, 0].mean()) > 1e-3  # not re-centred on its own statistics


def test_split_outputs_are_float32_contiguous_and_read_only():
    X, y = blobs()
    s = split(Parts(X, y), seed=0)
    for a in (s.X_train, s.X_val, s.X_test):
        assert a.dtype == np.float32 and a.flags.c_contiguous
    for a in (s.y_train, s.y_val, s.y_test):
        assert a.dtype == np.int64
    with pytest.raises(ValueError, match="read-only"):
        s.X_train[0, 0] = 1.0
    assert X.dtype == np.float64  # the caller's array is left alone


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.1), (0.1, 1.0), (0.6, 0.5)])
def test_split_refuses_bad_fractions(val, test):
    X, y = blobs()
    with pytest.raises(ValueError):
        split(Parts(X, y), seed=0, val_fraction=val, test_fraction=test)


# ---------------------------------------------------------------- cache

DATA = encode(load_source("spiral"))
SHA = sha256(DATA)


class Fetch:
    """The database side: counts calls and returns the stored bytes."""

    def __init__(self, data: bytes = DATA) -> None:
        self.data, self.calls = data, 0

    def __call__(self, sha: str) -> bytes:
        self.calls += 1
        return self.data


def never(sha: str) -> bytes:
    raise AssertionError(f"fetch({sha}) should not be called")


def test_cache_hit_does_not_fetch_or_split_again():
    cache, fetch = DatasetCache(), Fetch()
    first = cache.get(SHA, 0, 0.14, 0.14, fetch)
    assert cache.get(SHA, 0, 0.14, 0.14, never) is first
    assert fetch.calls == 1
    other = cache.get(SHA, 1, 0.14, 0.14, fetch)  # another seed is another split
    assert fetch.calls == 2 and not np.array_equal(other.y_train, first.y_train)
    expected = split(decode(DATA), 0)
    np.testing.assert_array_equal(first.X_train, expected.X_train)


def test_cache_keeps_only_the_most_recently_used_splits():
    cache, fetch = DatasetCache(max_splits=2), Fetch()
    for seed in (0, 1, 0, 2):  # seed 0 is used again before 2 arrives, so 1 is evicted
        cache.get(SHA, seed, 0.14, 0.14, fetch)
    assert fetch.calls == 3
    cache.get(SHA, 0, 0.14, 0.14, never)
    cache.get(SHA, 1, 0.14, 0.14, fetch)
    assert fetch.calls == 4


def test_disk_cache_is_shared_between_instances(tmp_path):
    fetch = Fetch()
    a = DatasetCache(tmp_path / "cache").get(SHA, 0, 0.14, 0.14, fetch)
    assert fetch.calls == 1
    assert (tmp_path / "cache" / f"{SHA}.npz").read_bytes() == DATA
    b = DatasetCache(tmp_path / "cache").get(SHA, 0, 0.14, 0.14, never)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{SHA}.npz"]  # no temp files


def test_corrupt_cache_file_is_fetched_again(tmp_path, caplog):
    cached = tmp_path / f"{SHA}.npz"
    cached.write_bytes(DATA[:-10] + b"x" * 10)
    fetch = Fetch()
    splits = DatasetCache(tmp_path).get(SHA, 0, 0.14, 0.14, fetch)
    assert fetch.calls == 1 and splits.n_classes == 3
    assert cached.read_bytes() == DATA
    assert "corrupt" in caplog.text


def test_fetched_bytes_with_the_wrong_hash_are_refused(tmp_path):
    bad = Fetch(DATA + b"\0")
    with pytest.raises(DatasetError, match=f"^dataset {SHA}: fetched bytes have sha256"):
        DatasetCache(tmp_path).get(SHA, 0, 0.14, 0.14, bad)
    assert list(tmp_path.iterdir()) == []


def test_cache_refuses_bad_hashes_and_missing_blobs(tmp_path):
    cache = DatasetCache(tmp_path)
    with pytest.raises(DatasetError, match="not a sha256 hex digest"):
        cache.get("../../etc/passwd", 0, 0.14, 0.14, never)
    with pytest.raises(DatasetError, match="not found in the database"):
        cache.get("0" * 64, 0, 0.14, 0.14, lambda sha: None)


def _worker_get(directory: str) -> bytes:
    splits = DatasetCache(Path(directory)).get(SHA, 0, 0.14, 0.14, Fetch())
    return splits.X_train.tobytes()


def test_worker_processes_share_one_cache_directory(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_worker_get, [str(tmp_path)] * 8)
    assert len(set(results)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"{SHA}.npz"]
    assert (tmp_path / f"{SHA}.npz").read_bytes() == DATA


def test_uint8_images_are_stored_as_uint8_and_split_as_float32(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(500, 3072), dtype=np.uint8)  # 500 CIFAR-sized images
    y = rng.integers(0, 10, size=500).astype(np.uint8)
    path = tmp_path / "images.npz"
    np.savez(path, X=X, y=y)
    parts = load_source(str(path))
    assert parts.X.dtype == np.uint8
    blob = encode(parts)
    assert len(blob) <= 1.05 * (X.nbytes + y.nbytes)
    assert sha256(encode(load_source(str(path)))) == sha256(blob)  # stable for the source
    got, want = split(decode(blob), seed=3), split(Parts(X.astype(np.float32), parts.y), seed=3)
    for name in ("X_train", "X_val", "X_test", "y_train"):
        assert getattr(got, name).dtype == getattr(want, name).dtype
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
