"""The one npz writer: a standard archive np.load reads without pickle, the bytes zipfile
itself writes for the same members (so dataset hashes never moved), independent of the
clock, and a zip64 fallback with the same members."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest

from worker import npzio


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"X": rng.standard_normal((7, 3)).astype(np.float32),
            "images": rng.integers(0, 256, (2, 3, 4, 4), dtype=np.uint8),
            "update_rule": np.array("adam"), "naïve": np.arange(4, dtype=np.int16),
            "empty": np.zeros((0,), np.float64)}


def via_zipfile(items: dict[str, np.ndarray]) -> bytes:
    """What zipfile writes for stored members with the fixed date, Unix, mode 0644."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for key, a in items.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, a, allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=npzio.ZIP_DATE)
            info.create_system, info.external_attr = 3, 0o644 << 16
            zf.writestr(info, member.getvalue())
    return out.getvalue()


def members(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None  # every CRC checks out
        assert {i.date_time for i in zf.infolist()} == {npzio.ZIP_DATE}
        return {i.filename: zf.read(i) for i in zf.infolist()}


def test_the_archive_is_a_standard_npz_with_zipfiles_bytes(monkeypatch) -> None:
    body = npzio.npz_bytes(arrays())
    assert body == via_zipfile(arrays())
    assert list(members(body)) == [f"{k}.npy" for k in arrays()]
    with np.load(io.BytesIO(body), allow_pickle=False) as npz:
        for key, a in arrays().items():
            np.testing.assert_array_equal(npz[key], a)
            assert npz[key].dtype == a.dtype and npz[key].shape == a.shape
    monkeypatch.setattr(time, "localtime", lambda *_: (2031, 7, 4, 12, 30, 10, 4, 185, 0))
    assert npzio.npz_bytes(arrays()) == body


def test_the_zip64_fallback_holds_the_same_members() -> None:
    body = npzio.npz_bytes(arrays())
    entries = [(name.encode(), memoryview(raw)) for name, raw in members(body).items()]
    assert members(npzio._zip64(entries)) == members(body)


def test_object_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match="pickle"):
        npzio.npz_bytes({"x": np.array([object()])})
