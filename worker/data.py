"""Datasets on the worker side: the blob codec and the split.

``launch`` reads the user's files (``coordinator.datasets``) into ``Parts`` and stores
``encode(parts)`` once, keyed by ``sha256``. Workers fetch those bytes by hash through
``worker.dataset_cache.DatasetCache``, which verifies them, keeps them in an optional
on-disk directory shared by a host's processes, and hands out one ``split`` per
(dataset, seed, fractions, preprocess).

A blob is an ``.npz``: ``X, y`` for a source without its own split, else
``X_train, y_train`` with ``X_val, y_val`` and/or ``X_test, y_test`` — the same
members a user's ``.npz`` holds. ``X`` is ``(N, D)`` or ``(N, C, H, W)``.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass

import numpy as np

from worker.defaults import PREPROCESS, TEST_FRACTION, VAL_FRACTION
from worker.npzio import npz_bytes

PREPROCESS_MODES = ("standardize", "mean_image", "none")


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the dataset and the problem."""


def is_small_int(dtype: np.dtype) -> bool:
    """8- and 16-bit integers: float32 holds each value exactly, so X is stored as is."""
    return dtype.kind in "iu" and dtype.itemsize <= 2


# ---------------------------------------------------------------- parts


@dataclass(frozen=True, eq=False)  # eq=False: element-wise array equality has no truth value
class Parts:
    """A dataset as its source gives it: the training rows ``X, y`` (every row when the
    source has no split of its own) and the source's own validation and test rows
    (``None``: carved from the training rows by ``split``)."""

    X: np.ndarray
    y: np.ndarray
    val: tuple[np.ndarray, np.ndarray] | None = None
    test: tuple[np.ndarray, np.ndarray] | None = None

    def named(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each given part by name: ``{"": (X, y)}`` without an own split, else ``train``,
        ``val``, ``test`` as given (the npz member suffixes)."""
        if self.val is None and self.test is None:
            return {"": (self.X, self.y)}
        given = {"train": (self.X, self.y), "val": self.val, "test": self.test}
        return {k: v for k, v in given.items() if v is not None}

    @classmethod
    def of(cls, named: dict[str, tuple[np.ndarray, np.ndarray]]) -> Parts:
        """The inverse of ``named``."""
        rest = dict(named)
        return cls(*rest.pop("" if "" in rest else "train"), **rest)

    @property
    def n_rows(self) -> int:
        return sum(len(y) for _, y in self.named().values())

    @property
    def n_classes(self) -> int:
        return int(max(y.max(initial=-1) for _, y in self.named().values())) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.X.shape[1:])


def member_keys(part: str) -> tuple[str, str]:
    """The npz member names of a part: ``X, y`` or ``X_<part>, y_<part>``."""
    return (f"X_{part}", f"y_{part}") if part else ("X", "y")


def check_shapes(name: str, X: np.ndarray, y: np.ndarray, part: str = "") -> None:
    """Raise DatasetError unless X is (N, D...) numeric and y is (N,)."""
    xk, yk = member_keys(part)
    if X.ndim < 2:
        raise DatasetError(f"{name}: {xk} must be (N, D) or (N, C, H, W), got shape {X.shape}")
    if y.ndim != 1:
        raise DatasetError(f"{name}: {yk} must be 1-D (N,), got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise DatasetError(f"{name}: {xk} has {X.shape[0]} rows but {yk} has {y.shape[0]} "
                           "labels")
    if 0 in X.shape[1:]:
        raise DatasetError(f"{name}: {xk} has no feature columns")
    if X.dtype.kind not in "biuf":
        raise DatasetError(f"{name}: {xk} must hold real numbers, got dtype {X.dtype}")


def read_npz(name: str, data: bytes) -> Parts:
    """The arrays of an .npz archive as ``Parts`` (shapes checked, values not), loaded
    without pickle: ``X, y``, or ``X_train, y_train`` and optionally ``X_val, y_val``,
    ``X_test, y_test``."""
    if data[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise DatasetError(f"{name}: not an .npz archive (not a zip file)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return _npz_parts(name, npz)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DatasetError(f"{name}: corrupt .npz archive: {e}") from None


def _npz_parts(name: str, npz: np.lib.npyio.NpzFile) -> Parts:
    files = set(npz.files)
    if not {"X_train", "y_train"} & files:
        return Parts(*_npz_pair(name, npz, ""))
    if {"X", "y"} & files:
        raise DatasetError(f"{name}: holds both X/y and X_train/y_train; keep one form")
    return Parts.of({part: _npz_pair(name, npz, part) for part in ("train", "val", "test")
                     if part == "train" or set(member_keys(part)) & files})


def _npz_pair(name: str, npz: np.lib.npyio.NpzFile, part: str) -> tuple[np.ndarray, np.ndarray]:
    X, y = (_npz_member(name, npz, key) for key in member_keys(part))
    check_shapes(name, X, y, part)
    return X, y


def _npz_member(name: str, npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    if key not in npz.files:
        found = ", ".join(npz.files) or "no arrays"
        raise DatasetError(f"{name}: missing array '{key}'; found: {found}")
    try:
        return npz[key]
    except ValueError as e:
        if "pickle" in str(e) or "Object arrays" in str(e):
            raise DatasetError(
                f"{name}: array '{key}' is an object array that needs pickle, which hpsweep "
                "never loads; save plain numeric arrays"
            ) from None
        raise DatasetError(f"{name}: array '{key}' is unreadable: {e}") from None


# ---------------------------------------------------------------- bytes


def stored_dtype(arrays: list[np.ndarray]) -> np.dtype:
    """X's dtype in a blob: a shared 8- or 16-bit integer dtype as is, else float32."""
    kinds = {a.dtype.newbyteorder("<") for a in arrays}
    if len(kinds) == 1 and is_small_int(arrays[0].dtype):
        return kinds.pop()
    return np.dtype("<f4")


def encode(parts: Parts) -> bytes:
    """An .npz (X float32, or its own dtype if in 8- or 16-bit integers; y int64; stored, no
    pickle) whose bytes depend only on the arrays."""
    dtype = stored_dtype([X for X, _ in parts.named().values()])
    arrays = {}
    for part, (X, y) in parts.named().items():
        xk, yk = member_keys(part)
        arrays[xk], arrays[yk] = np.ascontiguousarray(X, dtype), np.ascontiguousarray(y, "<i8")
        check_shapes("encode", arrays[xk], arrays[yk], part)
    return npz_bytes(arrays)


def decode(data: bytes, name: str = "dataset blob") -> Parts:
    """``encode``'s parts from its bytes (X float32 or as stored, y int64), without pickle."""
    named = read_npz(name, bytes(data)).named()
    dtype = stored_dtype([X for X, _ in named.values()]).newbyteorder("=")
    out = {}
    for part, (X, y) in named.items():
        if y.dtype.kind not in "iu":
            raise DatasetError(f"{name}: {member_keys(part)[1]} must hold integer class "
                               f"labels, got dtype {y.dtype}")
        out[part] = (np.ascontiguousarray(X, dtype=dtype),
                     np.ascontiguousarray(y, dtype=np.int64))
    return Parts.of(out)


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``: the dataset's content address."""
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- splits


@dataclass(frozen=True, eq=False)
class Splits:
    """One fixed train/validation/test split, preprocessed with training statistics.

    Arrays are float32/int64, C-contiguous and read-only (a cached split is
    shared by every trial a process runs). X keeps the source's row shape.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one row: ``(D,)`` for flat data, ``(C, H, W)`` for images."""
        return tuple(int(d) for d in self.X_train.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def n_classes(self) -> int:
        return int(max(y.max(initial=-1) for y in (self.y_train, self.y_val, self.y_test))) + 1

    def flat(self) -> Splits:
        """The same split with each row flattened to ``n_features`` values (views, no copy)."""
        X_train, X_val, X_test = (X.reshape(len(X), -1)  # (N, C, H, W) -> (N, C*H*W)
                                  for X in (self.X_train, self.X_val, self.X_test))
        return Splits(X_train, self.y_train, X_val, self.y_val, X_test, self.y_test)


def split(
    parts: Parts,
    seed: int,
    val_fraction: float = VAL_FRACTION,
    test_fraction: float = TEST_FRACTION,
    preprocess: str = PREPROCESS,
) -> Splits:
    """The source's own validation and test rows as given; a part it lacks is carved from
    its training rows by one random permutation of ``default_rng(seed)``.

    A carved part gets ``round(N * fraction)`` of the N training rows, at least one.
    ``preprocess`` uses training statistics only: ``standardize`` (per feature: minus
    the mean, over the std; a feature constant on the training rows is only centred),
    ``mean_image`` (minus the mean image), ``none``.
    """
    X, y = np.asarray(parts.X), np.asarray(parts.y)
    n_train, n_val, n_test = carved_sizes(parts, val_fraction, test_fraction)
    N = len(y)
    order = np.random.default_rng(seed).permutation(N) if n_val or n_test else np.arange(N)
    carved = [(X, y, idx) for idx in (order[:n_train], order[n_train : n_train + n_val],
                                      order[n_train + n_val :])]
    for i, own in ((1, parts.val), (2, parts.test)):
        if own is not None:
            carved[i] = (np.asarray(own[0]), np.asarray(own[1]), slice(None))
    # gathers are copies (converted from a stored uint8 etc. only now): preprocess in place
    X_parts = [np.array(X_src[idx], dtype=np.float32) for X_src, _, idx in carved]
    shift, scale = _train_stats(X_parts[0], preprocess)
    arrays = []
    for X_part, (_, y_src, idx) in zip(X_parts, carved, strict=True):
        if shift is not None:
            X_part -= shift
        if scale is not None:
            X_part /= scale
        arrays += [_frozen(X_part, np.float32), _frozen(y_src[idx], np.int64)]
    return Splits(*arrays)


def carved_sizes(parts: Parts, val_fraction: float, test_fraction: float
                 ) -> tuple[int, int, int]:
    """How ``split`` divides the source's training rows: (train, carved val, carved test)."""
    N = len(parts.y)
    n_val = _part_size(N, val_fraction, "val") if parts.val is None else 0
    n_test = _part_size(N, test_fraction, "test") if parts.test is None else 0
    if N - n_val - n_test < 1:
        raise DatasetError(f"{N} training rows leave none after {n_val} val and {n_test} "
                           "test")
    return N - n_val - n_test, n_val, n_test


def _train_stats(X_train: np.ndarray, preprocess: str,
                 chunk: int = 4096) -> tuple[np.ndarray | None, np.ndarray | None]:
    """What to subtract and divide by (float32, shaped like one row), from the training
    rows only; the std is summed in float64 a chunk of rows at a time so a large
    training set needs no float64 copy."""
    if preprocess not in PREPROCESS_MODES:
        raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got "
                         f"{preprocess!r}")
    if preprocess == "none":
        return None, None
    rows = X_train.reshape(len(X_train), -1)  # (N, *row shape) -> (N, D), a view
    mean = rows.mean(axis=0, dtype=np.float64)
    if preprocess == "mean_image":
        return mean.astype(np.float32).reshape(X_train.shape[1:]), None
    sq = np.zeros_like(mean)
    for start in range(0, len(rows), chunk):
        d = rows[start : start + chunk] - mean  # (chunk, D) float64
        sq += np.einsum("ij,ij->j", d, d)
    std = np.sqrt(sq / len(rows))
    std[std == 0] = 1.0
    shape = X_train.shape[1:]
    return mean.astype(np.float32).reshape(shape), std.astype(np.float32).reshape(shape)


def _part_size(N: int, fraction: float, label: str) -> int:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"{label}_fraction must be between 0 and 1, got {fraction}")
    return max(1, round(N * fraction))


def _frozen(a: np.ndarray, dtype: type) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype)
    a.flags.writeable = False
    return a
