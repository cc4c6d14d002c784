"""Numeric gradients by centred differences, for checking backward passes (CS231n style).

Run them in float64: with float32 the differences drown in rounding error.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def eval_numerical_gradient(
    f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """Gradient of the scalar function ``f`` at ``x``: ``(f(x+h) - f(x-h)) / 2h`` per entry.

    ``x`` is perturbed in place and restored entry by entry.
    """
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        old = x[ix]
        x[ix] = old + h
        fxph = f(x)
        x[ix] = old - h
        fxmh = f(x)
        x[ix] = old
        grad[ix] = (fxph - fxmh) / (2 * h)
    return grad


def eval_numerical_gradient_array(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, df: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """Gradient of ``sum(f(x) * df)`` at ``x``: backpropagates ``df`` through an array function."""
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        old = x[ix]
        x[ix] = old + h
        pos = np.array(f(x), copy=True)  # f may return a buffer it reuses
        x[ix] = old - h
        neg = np.array(f(x), copy=True)
        x[ix] = old
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
    return grad


def rel_error(x: np.ndarray, y: np.ndarray) -> float:
    """Largest relative error ``|x - y| / max(1e-8, |x| + |y|)`` over all entries."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))
