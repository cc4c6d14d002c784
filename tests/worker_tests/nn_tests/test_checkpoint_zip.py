"""The zip inside checkpoint.encode is a standard archive (worker/npzio writes it; its own
tests cover the zip64 fallback)."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np

from worker.nn import checkpoint


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"param.W1": rng.standard_normal((7, 3)).astype(np.float32),
            "update_rule": np.array("adam"), "epoch": np.array(3, dtype=np.int64),
            "naïve": np.arange(4, dtype=np.int16), "empty": np.zeros((0,), np.float64)}


def members(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None  # every CRC checks out
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        return {i.filename: zf.read(i) for i in zf.infolist()}


def test_the_archive_is_a_standard_npz() -> None:
    data = checkpoint.encode(arrays())
    body = data[:-32]
    assert hashlib.sha256(body).digest() == data[-32:]
    assert list(members(body)) == [f"{k}.npy" for k in arrays()]
    with np.load(io.BytesIO(body), allow_pickle=False) as npz:
        for key, a in arrays().items():
            np.testing.assert_array_equal(npz[key], a)
            assert npz[key].dtype == a.dtype
