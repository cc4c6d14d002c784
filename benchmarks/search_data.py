"""The search benchmark's data: its two datasets (``digits``, and the harder clustered,
noisy ``hard`` set) and the per-seed .npz files that keep one train/validation/test split
for every sweep seed (checked against ``worker.data.split``). ``search.py`` says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coordinator.datasets import load_source
from worker.data import Parts, split


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    digits = load_source("digits")
    return digits.X, digits.y


def hard_dataset() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=3000, n_features=40, n_informative=16,
                               n_redundant=8, n_classes=6, n_clusters_per_class=3,
                               class_sep=1.0, flip_y=0.03, random_state=0)
    return X.astype(np.float32), y.astype(np.int64)


def seed_files(name: str, X: np.ndarray, y: np.ndarray, seeds: list[int], folder: Path,
               fixed_split: bool) -> dict[int, str]:
    """One .npz per seed. With ``fixed_split`` the rows are placed so that the product's
    split for that seed (one permutation of ``default_rng(seed)``) yields the same
    train, validation and test rows for every seed."""
    order0 = np.random.default_rng(12345).permutation(len(y))
    X, y = X[order0], y[order0]
    reference = None
    out = {}
    for seed in seeds:
        Xs, ys = X, y
        if fixed_split:
            order = np.random.default_rng(seed).permutation(len(y))
            Xs, ys = np.empty_like(X), np.empty_like(y)
            Xs[order], ys[order] = X, y  # split() takes rows order[:n_train], ... back
            got = split(Parts(Xs, ys), seed, 0.14, 0.14)
            reference = reference or got
            assert np.array_equal(got.X_val, reference.X_val) and \
                np.array_equal(got.y_train, reference.y_train), "the split moved"
        path = folder / f"{name}-{seed}.npz"
        np.savez(path, X=Xs, y=ys)
        out[seed] = str(path)
    return out
