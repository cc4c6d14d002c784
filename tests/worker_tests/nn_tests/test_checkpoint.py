"""Checkpoint bytes: exact round trip, integrity check, and no pickle anywhere."""

from __future__ import annotations

import hashlib
import io
import pickle

import numpy as np
import pytest

from worker.nn import checkpoint
from worker.nn.checkpoint import CheckpointError, decode, encode

UNPICKLED: list[str] = []


def record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Payload:
    """Unpickling this object calls ``record_unpickling``: proof that pickle ran."""

    def __reduce__(self):
        return (record_unpickling, ("payload",))


def sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "param.W1": rng.standard_normal((5, 3)).astype(np.float32),
        "optim.W1.v": rng.standard_normal((5, 3)).astype(np.float32),
        "epoch": np.array(7, dtype=np.int64),
        "val_history": np.array([0.1, 0.25, np.nan]),
        "rng": np.frombuffer(b'{"state": 340282366920938463463374607431768211455}', np.uint8),
        "update_rule": np.array("nesterov"),
        "empty": np.zeros((0, 4), np.float32),
    }


def with_digest(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


@pytest.fixture
def no_pickle(monkeypatch):
    """Make any use of pickle fail loudly during the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "dump", refuse)
    monkeypatch.setattr(pickle, "dumps", refuse)


def test_round_trip_is_exact(no_pickle):
    arrays = sample()
    back = decode(encode(arrays))
    assert list(back) == list(arrays)
    for key, a in arrays.items():
        assert back[key].dtype == a.dtype and back[key].shape == a.shape
        np.testing.assert_array_equal(back[key], a)


def test_encoding_is_deterministic():
    assert encode(sample()) == encode(sample())


def test_body_is_a_plain_npz_followed_by_a_sha256_trailer():
    data = encode(sample())
    body, digest = data[:-32], data[-32:]
    assert hashlib.sha256(body).digest() == digest
    with np.load(io.BytesIO(body), allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["param.W1"], sample()["param.W1"])


@pytest.mark.parametrize("where", [0, 100, 0.5, -40, -1])
def test_a_flipped_byte_raises(where):
    data = bytearray(encode(sample()))
    i = int(where * len(data)) if isinstance(where, float) else where
    data[i] ^= 0x01
    with pytest.raises(CheckpointError):
        decode(bytes(data))


@pytest.mark.parametrize("data", [b"", b"x" * 10, b"x" * 32])
def test_short_input_raises(data):
    with pytest.raises(CheckpointError):
        decode(data)


def test_truncated_checkpoint_raises():
    data = encode(sample())
    with pytest.raises(CheckpointError):
        decode(data[: len(data) // 2])


@pytest.mark.parametrize(
    "body",
    [b"definitely not an archive", b"PK\x03\x04 broken zip"],
    ids=["garbage", "broken_zip"],
)
def test_well_checksummed_garbage_raises(body):
    with pytest.raises(CheckpointError):
        decode(with_digest(body))


def test_a_bare_npy_is_not_a_checkpoint():
    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    with pytest.raises(CheckpointError, match="npz"):
        decode(with_digest(buf.getvalue()))


def test_object_arrays_are_never_unpickled():
    buf = io.BytesIO()
    np.savez(buf, evil=np.array([Payload()], dtype=object), ok=np.arange(3))
    UNPICKLED.clear()
    with pytest.raises(CheckpointError):
        decode(with_digest(buf.getvalue()))
    assert UNPICKLED == []


def test_object_arrays_cannot_be_encoded():
    with pytest.raises(ValueError):
        encode({"evil": np.array([Payload()], dtype=object)})


def test_error_type_is_a_value_error():
    assert issubclass(checkpoint.CheckpointError, ValueError)
