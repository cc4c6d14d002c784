"""Reading sources at launch: built-in datasets, .npz and .csv files, and the messages
that name the file and the problem."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from coordinator.datasets import load_source
from worker.data import DatasetError, Parts, encode, sha256

# sha256 of encode(load_source("spiral")): the spiral must be the same bytes everywhere
SPIRAL_SHA = "4487a30973a778559173de7823e5e2844199c621c978115627668f2f2edd5c7c"


def blobs(n: int = 60, D: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.standard_normal((n, D)) + y[:, None] * 2.0
    return X, y


def xy(parts: Parts) -> tuple[np.ndarray, np.ndarray]:
    assert parts.val is None and parts.test is None
    return parts.X, parts.y


def write_csv(path: Path, X: np.ndarray, y: np.ndarray, header: str | None = None) -> Path:
    lines = [header] if header else []
    for row, label in zip(X, y, strict=True):
        lines.append(",".join(repr(float(v)) for v in row) + f",{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- sources


def test_digits_loads():
    pytest.importorskip("sklearn", reason="the 'datasets' extra (scikit-learn) is not installed")
    X, y = xy(load_source("digits"))
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))
    assert X.min() == 0 and X.max() == 16


def test_digits_without_sklearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn...` fail
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    hint = r"'digits' needs scikit-learn.*pip install -e '\.\[datasets\]'"
    with pytest.raises(DatasetError, match=hint):
        load_source("digits")


def test_spiral_is_the_cs231n_spiral_and_identical_every_time():
    X, y = xy(load_source("spiral"))
    assert X.shape == (900, 2) and X.dtype == np.float32
    assert np.array_equal(np.bincount(y), [300, 300, 300])
    radius = np.hypot(X[:, 0], X[:, 1])
    assert radius.max() == pytest.approx(1.0, abs=1e-6)  # r = linspace(0, 1) on each arm
    X2, y2 = xy(load_source("spiral"))
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert sha256(encode(load_source("spiral"))) == SPIRAL_SHA


def test_npz_round_trip_remaps_labels_in_sorted_order(tmp_path):
    X, _ = blobs()
    labels = np.array([7, -2, 30])[np.arange(60) % 3]
    path = tmp_path / "data.npz"
    np.savez(path, X=X, y=labels)
    X2, y2 = xy(load_source(str(path)))
    assert X2.dtype == np.float32 and y2.dtype == np.int64
    np.testing.assert_array_equal(X2, X.astype(np.float32))
    np.testing.assert_array_equal(y2, np.array([1, 0, 2])[np.arange(60) % 3])


def test_npz_float_labels_that_are_integers_are_accepted(tmp_path):
    X, y = blobs()
    path = tmp_path / "data.npz"
    np.savez(path, X=X.astype(np.float32), y=y.astype(np.float64), extra=np.zeros(2))
    np.testing.assert_array_equal(load_source(str(path)).y, y)


@pytest.mark.parametrize("header", [None, "f0,f1,f2,label", "0,1,2,label"])
def test_csv_round_trip_with_and_without_header(tmp_path, header):
    X, y = blobs()
    path = write_csv(tmp_path / "data.csv", X, y, header)
    X2, y2 = xy(load_source(str(path)))
    np.testing.assert_array_equal(X2, X.astype(np.float32))
    np.testing.assert_array_equal(y2, y)


def test_csv_tolerates_bom_blank_lines_and_crlf(tmp_path):
    X, y = blobs(n=12)
    path = write_csv(tmp_path / "data.csv", X, y, "a,b,c,label")
    text = path.read_text().replace("\n", "\r\n\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    X2, y2 = xy(load_source(str(path)))
    assert X2.shape == (12, 3)
    np.testing.assert_array_equal(y2, y)


# ---------------------------------------------------------------- validation


def npz(**arrays):
    return lambda path: np.savez(path, **arrays)


def text(body: str):
    return lambda path: path.write_text(body)


X60, Y60 = blobs()
X_NAN = X60.copy()
X_NAN[17, 1] = np.nan
X_INF = X60.copy()
X_INF[3, 0] = np.inf
GOOD_ROWS = "".join(f"{i},{i % 7}.5,{i % 2}\n" for i in range(12))

BAD_FILES = [
    ("data.npz", npz(y=Y60), "missing array 'X'; found: y"),
    ("data.npz", npz(X=X60), "missing array 'y'; found: X"),
    ("data.npz", npz(X=X60[:, 0], y=Y60), r"X must be \(N, D\) or .*, got shape \(60,\)"),
    ("data.npz", npz(X=X60, y=Y60[:, None]), r"y must be 1-D \(N,\), got shape \(60, 1\)"),
    ("data.npz", npz(X=X60, y=Y60[:59]), "X has 60 rows but y has 59 labels"),
    ("data.npz", npz(X=X60[:, :0], y=Y60), "X has no feature columns"),
    ("data.npz", npz(X=X_NAN, y=Y60), "X has 1 NaN or infinite values.*row 17, column 2"),
    ("data.npz", npz(X=X_INF, y=Y60), "X has 1 NaN or infinite values.*row 3, column 1"),
    ("data.npz", npz(X=X60 * 1e300, y=Y60), "NaN or infinite values"),
    ("data.npz", npz(X=X60.astype(str), y=Y60), "X must hold real numbers, got dtype <U"),
    ("data.npz", npz(X=X60, y=Y60 + 0.5), "integer class labels; row 0 has 0.5"),
    ("data.npz", npz(X=X60, y=np.array(["a", "b", "c"] * 20)), "integer class labels, got dtype"),
    ("data.npz", npz(X=X60, y=np.full(60, 4)), r"at least 2 classes, found 1 \(label 4\)"),
    ("data.npz", npz(X=X60[:9], y=Y60[:9]), "at least 10 rows .* got 9"),
    ("data.npz", text("just text"), r"not an \.npz archive"),
    ("data.npz", lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 50), r"corrupt \.npz"),
    ("data.csv", text(""), "no data rows"),
    ("data.csv", text("a,b,label\n"), "no data rows"),
    ("data.csv", text("".join(f"{i}\n" for i in range(12))), "at least 2 columns"),
    ("data.csv", text(GOOD_ROWS + "3,4\n"), "line 13 has 2 columns, expected 3"),
    ("data.csv", text(GOOD_ROWS + "3,x4,1\n"), "line 13, column 2: 'x4' is not a number"),
    ("data.csv", text("a,b,c\n1,2\n" + GOOD_ROWS), "header has 3 columns but line 2 has 2"),
    ("data.csv", text(GOOD_ROWS + "nan,1,1\n"), "NaN or infinite values.*line 13, column 1"),
    ("data.csv", text("x,y,l\n" + GOOD_ROWS + "1,1,2.5\n"), "line 14 has 2.5"),
    ("data.csv", lambda p: p.write_bytes(b"1,2,3\n\xff\xfe,1\n"), "not UTF-8 text"),
]


@pytest.mark.parametrize(("filename", "write", "problem"), BAD_FILES)
def test_bad_files_are_refused_naming_file_and_problem(tmp_path, filename, write, problem):
    path = tmp_path / filename
    write(path)
    with pytest.raises(DatasetError, match=problem) as info:
        load_source(str(path))
    assert str(info.value).startswith(f"{path}: ")


def test_missing_unreadable_and_unknown_sources(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(DatasetError, match=f"^{missing}: file not found$"):
        load_source(str(missing))
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(DatasetError, match=f"^{folder}: cannot read file: Is a directory"):
        load_source(str(folder))
    txt = tmp_path / "data.txt"
    txt.write_text("1,2\n")
    with pytest.raises(DatasetError, match=rf"^{txt}: unknown dataset;.*\.npz or \.csv"):
        load_source(str(txt))
    with pytest.raises(DatasetError, match=r"^cifar: unknown dataset; expected digits or "
                                           r"spiral.*cifar10:FOLDER"):
        load_source("cifar")


def test_pickle_bearing_npz_is_refused(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.array([[object()]] * 12, dtype=object), y=np.arange(12) % 2)
    with pytest.raises(DatasetError, match=f"^{path}: array 'X' is an object array.*pickle"):
        load_source(str(path))
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps({"X": X60, "y": Y60}))
    with pytest.raises(DatasetError, match=r"not an \.npz archive"):
        load_source(str(raw))


