"""The fully connected classifier: affine -> ReLU (-> dropout) ... -> affine -> softmax.

Parameters are a flat dict ``{"W1": (D, H1), "b1": (H1,), ..., "WL": (H, C), "bL": (C,)}``
with ``L = len(hidden) + 1`` (``L = 1`` is a softmax classifier). ``Net`` runs
training steps on preallocated buffers (one set per minibatch size) so a step
allocates almost nothing; the module functions evaluate in large batches with
no gradient work. The dtype of the parameters is the dtype of the computation:
float32 for training, float64 for gradient checks (same code).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from worker.nn import layers

EVAL_BATCH = 4096


def n_layers(params: dict[str, np.ndarray]) -> int:
    """Number of affine layers ``L`` in a parameter dict."""
    return sum(1 for k in params if k.startswith("W"))


def dims_of(params: dict[str, np.ndarray]) -> tuple[int, ...]:
    """Layer widths ``(D, H1, ..., C)`` of a parameter dict."""
    n = n_layers(params)
    return (params["W1"].shape[0], *(params[f"W{i}"].shape[1] for i in range(1, n + 1)))


def param_names(n: int) -> list[str]:
    """``["W1", "b1", ..., "Wn", "bn"]``: the parameter dict's order, and the arena's."""
    return [name for i in range(1, n + 1) for name in (f"W{i}", f"b{i}")]


def arena(
    shapes: dict[str, tuple[int, ...]], dtype: np.dtype
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One flat buffer and C-contiguous views of it shaped as ``shapes``, in order.

    Parameters (or gradients) laid out in one arena let an elementwise update run
    as one call over the whole model instead of one per array: the same values,
    since elementwise operations round alike in any grouping.
    """
    flat = np.empty(sum(math.prod(sh) for sh in shapes.values()), dtype)
    return flat, arena_views(flat, shapes)


def arena_views(flat: np.ndarray, shapes: Mapping[str, Sequence[int] | np.ndarray]
                ) -> dict[str, np.ndarray]:
    """Views of the 1-D ``flat`` shaped as ``shapes`` (or as arrays' shapes), in order."""
    views, start = {}, 0
    for name, shape in shapes.items():
        shape = shape.shape if isinstance(shape, np.ndarray) else tuple(shape)
        size = math.prod(shape)
        views[name] = flat[start : start + size].reshape(shape)
        start += size
    return views


def init_params(
    dims: Sequence[int],
    rng: np.random.Generator,
    weight_scale: float = 0.0,
    dtype: type = np.float32,
) -> dict[str, np.ndarray]:
    """Random weights, zero biases for layer widths ``dims = (D, H1, ..., C)``.

    Weights are ``std * N(0, 1)`` with ``std = weight_scale`` or, when it is 0,
    He initialisation ``sqrt(2 / fan_in)``. Draws W1, W2, ... in order from ``rng``.
    """
    params: dict[str, np.ndarray] = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(dims), start=1):
        std = weight_scale or math.sqrt(2.0 / fan_in)  # a Python float: no upcast
        w = rng.standard_normal((fan_in, fan_out), dtype=dtype)
        w *= std
        params[f"W{i}"] = w
        params[f"b{i}"] = np.zeros(fan_out, dtype=dtype)
    return params


class _Workspace:
    """Buffers for one minibatch size ``n``: activations, their gradients, masks."""

    def __init__(self, dims: tuple[int, ...], n: int, dtype: np.dtype, dropout: bool) -> None:
        self.out = [np.empty((n, d), dtype) for d in dims[1:]]  # each affine's output
        self.dh = [np.empty((n, d), dtype) for d in dims[1:-1]]  # d(hidden output)
        self.mask = [np.empty((n, d), dtype) for d in dims[1:-1]] if dropout else []
        self.rows = np.arange(n)  # row indices for the loss's gathers


class Net:
    """Training steps for one architecture, reusing buffers across minibatches.

    ``loss_and_grads`` returns gradients in arrays owned by the net (overwritten
    by the next call) and leaves the minibatch's correct-prediction count in
    ``n_correct``.
    """

    def __init__(self, dims: Sequence[int], dtype: type = np.float32) -> None:
        self.dims = tuple(int(d) for d in dims)
        self.dtype = np.dtype(dtype)
        self.n_layers = len(self.dims) - 1
        names = param_names(self.n_layers)
        self._names = [(names[2 * i], names[2 * i + 1]) for i in range(self.n_layers)]
        shapes = {}
        for i, (w, b) in enumerate(self._names, start=1):
            shapes[w], shapes[b] = self.dims[i - 1 : i + 1], (self.dims[i],)
        # one arena: an optimizer may update every parameter in one call (see arena)
        self.flat_grads, self.grads = arena(shapes, self.dtype)
        self.n_correct = 0
        self._scratch = np.empty(layers.RUN, self.dtype)  # for reg * W, run by run
        self._work: dict[tuple[int, bool], _Workspace] = {}

    def _workspace(self, n: int, dropout: bool) -> _Workspace:
        ws = self._work.get((n, dropout))
        if ws is None:
            ws = self._work[(n, dropout)] = _Workspace(self.dims, n, self.dtype, dropout)
        return ws

    def loss_and_grads(
        self,
        params: dict[str, np.ndarray],
        X: np.ndarray,
        y: np.ndarray,
        reg: float = 0.0,
        dropout: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Loss (data + L2) of the minibatch X (N, D), y (N,) and its gradients.

        ``dropout`` is the drop probability of hidden units; masks come from ``rng``.
        """
        if X.dtype != self.dtype:
            raise TypeError(f"X has dtype {X.dtype}, the net computes in {self.dtype}")
        if dropout and rng is None:
            raise ValueError("dropout needs a random generator")
        ws = self._workspace(X.shape[0], dropout > 0)
        caches = self._forward(params, X, ws, dropout, rng)
        scores = ws.out[-1]
        best = scores.argmax(axis=1)
        self.n_correct = int(np.count_nonzero(best == y))
        loss, dout = layers.softmax_loss(scores, y, out=scores, best=best, rows=ws.rows)
        loss += self._backward(params, dout, caches, ws, dropout, reg)
        return loss, self.grads

    def _forward(
        self,
        params: dict[str, np.ndarray],
        X: np.ndarray,
        ws: _Workspace,
        dropout: float,
        rng: np.random.Generator | None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Fill ``ws.out`` layer by layer (in place); return the affine caches."""
        caches = []
        h = X
        for i, (w, b) in enumerate(self._names, start=1):
            out, cache = layers.affine_forward(h, params[w], params[b], out=ws.out[i - 1])
            caches.append(cache)
            if i < self.n_layers:
                h, _ = layers.relu_forward(out, out=out)
                if dropout:
                    layers.dropout_forward(h, dropout, rng, out=h, mask=ws.mask[i - 1])
        return caches

    def _backward(
        self,
        params: dict[str, np.ndarray],
        dout: np.ndarray,
        caches: list[tuple[np.ndarray, np.ndarray]],
        ws: _Workspace,
        dropout: float,
        reg: float,
    ) -> float:
        """Fill ``self.grads`` from d(scores); return the L2 loss.

        The first layer computes no input gradient.
        """
        reg_loss = 0.0
        for i in range(self.n_layers, 0, -1):
            w_name, b_name = self._names[i - 1]
            dh, _, _ = layers.affine_backward(
                dout,
                caches[i - 1],
                dx=ws.dh[i - 2] if i > 1 else None,
                dw=self.grads[w_name],
                db=self.grads[b_name],
                need_dx=i > 1,
            )
            reg_loss += layers.l2_regularize(params[w_name], self.grads[w_name], reg, self._scratch)
            if dh is not None:
                if dropout:
                    layers.dropout_backward(dh, ws.mask[i - 2], out=dh)
                # the ReLU output (after dropout) is positive exactly where gradient flows
                dout = layers.relu_backward(dh, ws.out[i - 2], out=dh)
        return reg_loss


def loss_and_grads(
    params: dict[str, np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    reg: float = 0.0,
    dropout: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """One-off loss and gradients (copies) through a fresh ``Net`` in the params' dtype."""
    net = Net(dims_of(params), params["W1"].dtype.type)
    loss, grads = net.loss_and_grads(params, X, y, reg, dropout, rng)
    return loss, {k: g.copy() for k, g in grads.items()}


def scores(params: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Class scores (N, C) of X (N, D) in evaluation mode (no dropout, no gradients)."""
    h = X
    n = n_layers(params)
    for i in range(1, n + 1):
        h, _ = layers.affine_forward(h, params[f"W{i}"], params[f"b{i}"])
        if i < n:
            layers.relu_forward(h, out=h)
    return h


def predict_proba(
    params: dict[str, np.ndarray], X: np.ndarray, batch: int = EVAL_BATCH
) -> np.ndarray:
    """Softmax class probabilities (N, C), computed ``batch`` rows at a time."""
    dtype = params["W1"].dtype
    probs = np.empty((X.shape[0], params[f"b{n_layers(params)}"].shape[0]), dtype)
    for start in range(0, X.shape[0], batch):
        s = scores(params, X[start : start + batch].astype(dtype, copy=False))
        s -= s.max(axis=1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=1, keepdims=True)
        probs[start : start + batch] = s
    return probs


def evaluate(
    params: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray, batch: int = EVAL_BATCH
) -> tuple[float, float]:
    """``(data_loss, accuracy)`` of X (N, D), y (N,); NaN for both when N is 0."""
    n = X.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    dtype = params["W1"].dtype
    loss_sum, n_correct = 0.0, 0
    for start in range(0, n, batch):
        yb = y[start : start + batch]
        s = scores(params, X[start : start + batch].astype(dtype, copy=False))
        n_correct += int(np.count_nonzero(s.argmax(axis=1) == yb))
        loss, _ = layers.softmax_loss(s, yb, out=s)
        loss_sum += loss * len(yb)
    return loss_sum / n, n_correct / n
