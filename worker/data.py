"""Datasets: load and validate a source, encode it to content-addressed bytes,
split and standardise it for a trial, and cache the splits per worker process.

A sweep names its dataset as ``digits``, ``spiral`` or a path to a ``.npz`` /
``.csv`` file. ``launch`` turns it into validated arrays (``load_source``) and
bytes (``encode``) that the storage layer keeps once, keyed by ``sha256``.
Workers fetch those bytes by hash through ``DatasetCache``, which verifies them,
keeps them in an optional on-disk directory shared by the processes of a host,
and hands out one fixed train/validation/test split per (dataset, seed).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.defaults import TEST_FRACTION, VAL_FRACTION

log = logging.getLogger(__name__)

BUILTIN_DATASETS = ("digits", "spiral")
MIN_ROWS = 10  # enough for at least one row in each of train, validation and test
SPIRAL_SEED = 0
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamp: same arrays, same bytes
_SHA_RE = re.compile(r"[0-9a-f]{64}")


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the dataset and the problem."""


def is_small_int(dtype: np.dtype) -> bool:
    """8- and 16-bit integers: float32 holds each value exactly, so X is stored as is."""
    return dtype.kind in "iu" and dtype.itemsize <= 2


# ---------------------------------------------------------------- sources


def load_source(spec: str) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate a dataset: X float32 (N, D), y int64 (N,) with labels 0..C-1.

    ``spec`` is ``digits``, ``spiral`` or a path ending in ``.npz`` or ``.csv``.
    Raises ``DatasetError`` naming the dataset and what is wrong with it.
    """
    if spec == "digits":
        return _digits()
    if spec == "spiral":
        return validated("spiral", *spiral())
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise DatasetError(
            f"{spec}: unknown dataset; expected {' or '.join(BUILTIN_DATASETS)}, "
            f"or a path to a .npz or .csv file"
        )
    data = _read_file(spec, path)
    if suffix == ".npz":
        return validated(spec, *_npz_arrays(spec, data))
    X, y, lines = _csv_arrays(spec, data)
    return validated(spec, X, y, where=lambda i: f"line {lines[i]}")


def spiral(
    n_per_class: int = 300, n_classes: int = 3, seed: int = SPIRAL_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """The CS231n spiral: K arms of N points in 2-D, angle noise 0.2 (float64 X, int64 y)."""
    rng = np.random.default_rng(seed)
    N, K = n_per_class, n_classes
    X = np.zeros((N * K, 2))
    y = np.repeat(np.arange(K, dtype=np.int64), N)
    for j in range(K):
        r = np.linspace(0.0, 1.0, N)
        t = np.linspace(j * 4, (j + 1) * 4, N) + rng.standard_normal(N) * 0.2
        # math.sin/cos rather than np.sin/cos: NumPy picks SIMD kernels by CPU, libm does not
        X[j * N : (j + 1) * N, 0] = r * np.array([math.sin(v) for v in t])
        X[j * N : (j + 1) * N, 1] = r * np.array([math.cos(v) for v in t])
    return X, y


def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits  # optional extra, imported only when asked
    except ImportError:
        raise DatasetError(
            "dataset 'digits' needs scikit-learn: pip install -e '.[datasets]' "
            "in a clone of hpsweep"
        ) from None
    bunch = load_digits()
    return validated("digits", bunch.data, bunch.target)


def _read_file(name: str, path: Path) -> bytes:
    if not path.exists():
        raise DatasetError(f"{name}: file not found")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{name}: cannot read file: {e.strerror or e}") from None


def _npz_arrays(name: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Arrays X and y of an .npz archive, loaded without pickle."""
    if data[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise DatasetError(f"{name}: not an .npz archive (not a zip file)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return _npz_member(name, npz, "X"), _npz_member(name, npz, "y")
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DatasetError(f"{name}: corrupt .npz archive: {e}") from None


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


def _csv_arrays(name: str, data: bytes) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """X, y and each row's 1-based line number from a comma-separated file."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{name}: not UTF-8 text (bad byte at offset {e.start})") from None
    rows = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if rows and not _is_numeric(rows[0][1]):
        header = rows.pop(0)[1]
        if rows and header.count(",") != rows[0][1].count(","):
            raise DatasetError(
                f"{name}: header has {header.count(',') + 1} columns but line {rows[0][0]} "
                f"has {rows[0][1].count(',') + 1}"
            )
    if not rows:
        raise DatasetError(f"{name}: no data rows")
    try:
        table = np.loadtxt([line for _, line in rows], delimiter=",", ndmin=2, comments=None)
    except ValueError as e:
        raise DatasetError(f"{name}: {_csv_problem(rows) or e}") from None
    if table.shape[1] < 2:
        raise DatasetError(f"{name}: needs at least 2 columns (features, then the label), got 1")
    return table[:, :-1], table[:, -1], [n for n, _ in rows]


def _is_numeric(line: str) -> bool:
    try:
        [float(field) for field in line.split(",")]
    except ValueError:
        return False
    return True


def _csv_problem(rows: list[tuple[int, str]]) -> str | None:
    """The first ragged row or non-number, by line and column, for a clear message."""
    width = rows[0][1].count(",") + 1
    for n, line in rows:
        fields = line.split(",")
        if len(fields) != width:
            return f"line {n} has {len(fields)} columns, expected {width}"
        for col, field in enumerate(fields, 1):
            try:
                float(field)
            except ValueError:
                return f"line {n}, column {col}: {field.strip()!r} is not a number"
    return None


# ---------------------------------------------------------------- validation


def _check_shapes(name: str, X: np.ndarray, y: np.ndarray) -> None:
    """Raise DatasetError unless X is (N, D) numeric and y is (N,)."""
    if X.ndim != 2:
        raise DatasetError(f"{name}: X must be 2-D (N, D), got shape {X.shape}")
    if y.ndim != 1:
        raise DatasetError(f"{name}: y must be 1-D (N,), got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise DatasetError(f"{name}: X has {X.shape[0]} rows but y has {y.shape[0]} labels")
    if X.shape[1] == 0:
        raise DatasetError(f"{name}: X has no feature columns")
    if X.dtype.kind not in "biuf":
        raise DatasetError(f"{name}: X must hold real numbers, got dtype {X.dtype}")


def validated(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    where: Callable[[int], str] = lambda i: f"row {i}",
) -> tuple[np.ndarray, np.ndarray]:
    """Check a dataset and return X (N, D) and y int64 remapped to 0..C-1.

    X stays in its own dtype when float32 holds every value of it exactly (8- and
    16-bit integers, e.g. images: stored at their size, converted by ``split``);
    anything else becomes float32.

    Labels keep their sorted order: the smallest becomes 0. ``where`` names a
    row in messages (a CSV file names its line).
    """
    X, y = np.asarray(X), np.asarray(y)
    _check_shapes(name, X, y)
    if is_small_int(X.dtype):
        return np.ascontiguousarray(X, dtype=X.dtype.newbyteorder("<")), _labels(name, y, where)
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
        X = np.ascontiguousarray(X, dtype=np.float32)
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DatasetError(
            f"{name}: X has {int(bad.sum())} NaN or infinite values (or beyond float32), "
            f"first at {where(int(row))}, column {int(col) + 1}"
        )
    return X, _labels(name, y, where)


def _labels(name: str, y: np.ndarray, where: Callable[[int], str]) -> np.ndarray:
    """y as int64 labels 0..C-1 (at least 2 classes, enough rows to split)."""
    y = _integer_labels(name, y, where)
    classes, y = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DatasetError(f"{name}: needs at least 2 classes, found 1 (label {classes[0]})")
    if len(y) < MIN_ROWS:
        raise DatasetError(
            f"{name}: needs at least {MIN_ROWS} rows to split into train, validation and test, "
            f"got {len(y)}"
        )
    return y.astype(np.int64)


def _integer_labels(name: str, y: np.ndarray, where: Callable[[int], str]) -> np.ndarray:
    if y.dtype.kind in "iu":
        return y
    if y.dtype.kind != "f":
        raise DatasetError(f"{name}: y must hold integer class labels, got dtype {y.dtype}")
    bad = ~np.isfinite(y) | (y != np.round(y))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            f"{name}: y must hold integer class labels; {where(row)} has {y[row]:g}"
        )
    return y.astype(np.int64)


# ---------------------------------------------------------------- bytes


def encode(X: np.ndarray, y: np.ndarray) -> bytes:
    """An .npz (X float32, or its own dtype if in 8- or 16-bit integers; y int64; stored, no
    pickle) whose bytes depend only on the arrays."""
    X = np.ascontiguousarray(X, dtype=_stored_dtype(X))
    y = np.ascontiguousarray(y, dtype="<i8")
    _check_shapes("encode", X, y)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for key, array in (("X", X), ("y", y)):
            member = io.BytesIO()
            np.lib.format.write_array(member, array, version=(1, 0), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.create_system = 3  # the default depends on the OS writing the archive
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return out.getvalue()


def _stored_dtype(X: np.ndarray) -> np.dtype:
    return X.dtype.newbyteorder("<") if is_small_int(X.dtype) else np.dtype("<f4")


def decode(data: bytes, name: str = "dataset blob") -> tuple[np.ndarray, np.ndarray]:
    """X (N, D) float32 or as stored (8- or 16-bit integers) and y int64 (N,) from ``encode``'s
    bytes, loaded without pickle."""
    X, y = _npz_arrays(name, bytes(data))
    _check_shapes(name, X, y)
    if y.dtype.kind not in "iu":
        raise DatasetError(f"{name}: y must hold integer class labels, got dtype {y.dtype}")
    X = np.ascontiguousarray(X, dtype=_stored_dtype(X).newbyteorder("="))
    return X, np.ascontiguousarray(y, dtype=np.int64)


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``: the dataset's content address."""
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- splits


@dataclass(frozen=True, eq=False)  # eq=False: element-wise array equality has no truth value
class Splits:
    """One fixed train/validation/test split, standardised with training statistics.

    Arrays are float32/int64, C-contiguous and read-only (a cached split is
    shared by every trial a process runs).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        return int(max(y.max(initial=-1) for y in (self.y_train, self.y_val, self.y_test))) + 1


def split(
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    val_fraction: float = VAL_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> Splits:
    """Split by one random permutation of ``default_rng(seed)``; standardise with train stats.

    Validation and test get ``round(N * fraction)`` rows, at least one each;
    training gets the rest. A feature constant on the training rows is only
    centred (its std counts as 1).
    """
    N = len(y)
    n_val, n_test = _part_size(N, val_fraction, "val"), _part_size(N, test_fraction, "test")
    n_train = N - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{N} rows leave no training rows after {n_val} val and {n_test} test")
    order = np.random.default_rng(seed).permutation(N)
    parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    # gathers are copies (converted from a stored uint8 etc. only now): standardise in place
    X_parts = [np.asarray(np.asarray(X)[idx], dtype=np.float32) for idx in parts]
    mean, std = _train_stats(X_parts[0])
    arrays = []
    for idx, X_part in zip(parts, X_parts, strict=True):
        X_part -= mean
        X_part /= std
        arrays += [_frozen(X_part, np.float32), _frozen(np.asarray(y)[idx], np.int64)]
    return Splits(*arrays)


def _train_stats(X_train: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (float32, std 0 -> 1), summed in float64 a chunk of rows
    at a time so a large training set needs no float64 copy."""
    mean = X_train.mean(axis=0, dtype=np.float64)
    sq = np.zeros_like(mean)
    for start in range(0, len(X_train), chunk):
        d = X_train[start : start + chunk] - mean  # (chunk, D) float64
        sq += np.einsum("ij,ij->j", d, d)
    std = np.sqrt(sq / len(X_train))
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def _part_size(N: int, fraction: float, label: str) -> int:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"{label}_fraction must be between 0 and 1, got {fraction}")
    return max(1, round(N * fraction))


def _frozen(a: np.ndarray, dtype: type) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype)
    a.flags.writeable = False
    return a


# ---------------------------------------------------------------- cache


class DatasetCache:
    """Per-process splits by (sha, seed, fractions), backed by an optional shared directory.

    On a miss the dataset's bytes come from ``directory/<sha>.npz`` when present
    and intact, else from ``fetch(sha)`` (the database), verified against the
    hash and written to the directory with an atomic rename, so several worker
    processes of one host can share it. Keeps the ``max_splits`` most recently
    used splits in memory. Not thread-safe: one per worker process.
    """

    def __init__(self, directory: Path | None = None, max_splits: int = 4) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.max_splits = max_splits
        self._splits: OrderedDict[tuple[str, int, float, float], Splits] = OrderedDict()

    def get(
        self,
        sha: str,
        seed: int,
        val_fraction: float,
        test_fraction: float,
        fetch: Callable[[str], bytes],
    ) -> Splits:
        """The split of dataset ``sha`` for ``seed``, decoding and splitting only on a miss."""
        key = (sha, int(seed), float(val_fraction), float(test_fraction))
        if key in self._splits:
            self._splits.move_to_end(key)
            return self._splits[key]
        X, y = decode(self._blob(sha, fetch), name=f"dataset {sha}")
        splits = split(X, y, seed, val_fraction, test_fraction)
        self._splits[key] = splits
        while len(self._splits) > self.max_splits:
            self._splits.popitem(last=False)
        return splits

    def _blob(self, sha: str, fetch: Callable[[str], bytes]) -> bytes:
        if not _SHA_RE.fullmatch(sha):  # also keeps a forged hash from naming another path
            raise DatasetError(f"dataset {sha!r}: not a sha256 hex digest")
        cached = self._read_cached(sha)
        if cached is not None:
            return cached
        data = fetch(sha)
        if data is None:
            raise DatasetError(f"dataset {sha}: not found in the database")
        data = bytes(data)
        got = sha256(data)
        if got != sha:
            raise DatasetError(f"dataset {sha}: fetched bytes have sha256 {got}; blob is corrupt")
        self._write_cached(sha, data)
        return data

    def _read_cached(self, sha: str) -> bytes | None:
        if self.directory is None:
            return None
        path = self.directory / f"{sha}.npz"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if sha256(data) == sha:
            return data
        log.warning("dataset cache file %s is corrupt; fetching it again", path)
        path.unlink(missing_ok=True)
        return None

    def _write_cached(self, sha: str, data: bytes) -> None:
        """Write via a temporary file and rename: readers see all of the file or none of it."""
        if self.directory is None:
            return
        tmp = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{sha}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.directory / f"{sha}.npz")
        except OSError as e:  # the cache only saves time; the trial can go on without it
            log.warning("cannot write dataset cache in %s: %s", self.directory, e)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
