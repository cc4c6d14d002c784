"""The built-in datasets: scikit-learn's 8x8 digits and the CS231n spiral."""

from __future__ import annotations

import math

import numpy as np

from coordinator.datasets.validate import validated
from worker.data import DatasetError, Parts

SPIRAL_SEED = 0


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


def load_spiral() -> Parts:
    return validated("spiral", Parts(*spiral()))


def load_digits() -> Parts:
    try:
        from sklearn.datasets import load_digits  # optional extra, imported only when asked
    except ImportError:
        raise DatasetError(
            "dataset 'digits' needs scikit-learn: pip install -e '.[datasets]' "
            "in a clone of hpsweep"
        ) from None
    bunch = load_digits()
    return validated("digits", Parts(bunch.data, bunch.target))
