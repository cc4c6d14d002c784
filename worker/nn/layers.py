"""Layers of the fully connected network as forward/backward pairs (CS231n style).

Each ``*_forward`` returns ``(out, cache)`` and the matching ``*_backward`` takes
``(dout, cache)``. Shapes: ``N`` examples, ``D`` inputs, ``M`` outputs of a layer,
``C`` classes. The functions take optional ``out=`` buffers so the model can
reuse preallocated float32 arrays across minibatches; without them they allocate.
L2 regularisation (``0.5 * reg * sum(W**2)`` per weight matrix, biases exempt)
and its gradient are one pass, ``l2_regularize``.
The computations follow the dtype of the inputs (float32 for training, float64
for gradient checks): constants are Python scalars, which NumPy treats as weak.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def affine_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, out: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """``out = x @ w + b``: x (N, D), w (D, M), b (M,) -> out (N, M); cache (x, w)."""
    out = np.matmul(x, w, out=out)
    out += b
    return out, (x, w)


def affine_backward(
    dout: np.ndarray,
    cache: tuple[np.ndarray, np.ndarray],
    dx: np.ndarray | None = None,
    dw: np.ndarray | None = None,
    db: np.ndarray | None = None,
    need_dx: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """dout (N, M) -> dx (N, D), dw (D, M), db (M,).

    ``need_dx=False`` skips the input gradient (``dx`` is then None): the first
    layer's input is the data, whose gradient nobody uses.
    """
    x, w = cache
    dw = np.matmul(x.T, dout, out=dw)
    db = np.add.reduce(dout, axis=0, out=db)  # np.sum's own ufunc, without ~1.5 us of wrapper
    if need_dx:
        dx = np.matmul(dout, w.T, out=dx)
    return (dx if need_dx else None), dw, db


def relu_forward(x: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``max(x, 0)``, shape kept; ``out=x`` works in place. The cache is the output."""
    out = np.maximum(x, 0, out=out)
    return out, out


def relu_backward(dout: np.ndarray, cache: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Pass ``dout`` where the ReLU's output was positive; ``out=dout`` works in place."""
    return np.multiply(dout, cache > 0, out=out)


def dropout_forward(
    x: np.ndarray,
    p: float,
    rng: np.random.Generator,
    out: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Inverted dropout (training mode): drop each unit with probability ``p``.

    Kept units are scaled by ``1 / (1 - p)`` so evaluation needs no rescaling.
    The mask comes from ``rng`` (uniforms in x's dtype). Returns ``(out, mask)``;
    ``mask`` holds 0 or ``1 / (1 - p)`` and is the cache.
    """
    keep = 1.0 - p
    if mask is None:
        mask = np.empty_like(x)
    rng.random(dtype=x.dtype, out=mask)
    np.less(mask, keep, out=mask)  # 1.0 where kept, 0.0 where dropped
    mask *= 1.0 / keep
    out = np.multiply(x, mask, out=out)
    return out, mask


def dropout_backward(
    dout: np.ndarray, cache: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient of inverted dropout: ``dout * mask``; ``out=dout`` works in place."""
    return np.multiply(dout, cache, out=out)


def softmax_loss(
    scores: np.ndarray,
    y: np.ndarray,
    out: np.ndarray | None = None,
    best: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(scores) and its gradient.

    scores (N, C), y (N,) integer labels in [0, C) -> (loss, dscores (N, C)).
    ``out=scores`` computes the gradient in place over the scores. A caller that
    already has ``best = scores.argmax(axis=1)`` (to count correct predictions) or
    ``rows = arange(N)`` passes them: two fewer operations per training step.
    """
    n, c = scores.shape
    if rows is None:
        rows = np.arange(n)
    if best is None:
        best = scores.argmax(axis=1)
    # the row maxima; on short rows (C = 10) argmax + gather is ~4x faster than max(axis=1)
    row_max = scores[rows, best]
    out = np.subtract(scores, row_max[:, None], out=out)
    # the true classes: flat indices into a flat view cost a third of [rows, y] (2-D
    # indexing only for a non-contiguous ``out``, whose flat "view" would be a copy)
    flat, true = (out.reshape(-1), rows * c + y) if out.flags.c_contiguous else (out, (rows, y))
    correct = flat[true]  # shifted score of the true class, <= 0
    np.exp(out, out=out)
    sums = np.add.reduce(out, axis=1, keepdims=True)
    # log-softmax of the true class = shifted score - log(sum exp): no log(0)
    # np.add.reduce is what .sum() runs, without its Python wrapper (~1 us each)
    loss = float(np.add.reduce(np.log(sums), axis=None) - np.add.reduce(correct)) / n
    out /= sums
    flat[true] -= 1.0
    out *= 1.0 / n
    return loss, out


def l2_regularize(
    w: np.ndarray, dw: np.ndarray, reg: float, scratch: np.ndarray | None = None
) -> float:
    """Add the L2 gradient ``reg * w`` to ``dw`` in place; return ``0.5 * reg * sum(w**2)``.

    Works through cache-sized runs so ``w`` is read from memory once for both;
    ``scratch`` is a 1-D buffer of at least ``min(w.size, RUN)`` elements.
    """
    if reg == 0:
        return 0.0
    if scratch is None:
        scratch = np.empty(min(w.size, RUN), w.dtype)
    sum_sq = 0.0
    for w_run, dw_run in cache_runs(w, dw):
        tmp = scratch[: w_run.size]
        sum_sq += float(np.vdot(w_run, w_run))
        dw_run += np.multiply(w_run, reg, out=tmp)
    return 0.5 * reg * sum_sq


# Elements per run of an elementwise pass: a few float32 arrays of this length
# (256 KB each) fit in L2, so the later steps of a multi-step update hit the cache
# instead of memory (measured on 3072x500: L2 gradient 1.08 -> 0.58 ms). The one
# cache-blocking helper of worker/nn: the L2 gradient, the update rules (optim) and
# the weight average (training) all run through ``cache_runs``.
RUN = 1 << 16


def cache_runs(*arrays: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """Matching flat views of equally shaped, C-contiguous arrays, ``RUN`` elements each.

    Elementwise float operations round the same in any run, so updating the
    views gives bit for bit the result of updating the whole arrays.
    """
    if not all(a.flags.c_contiguous for a in arrays):
        raise ValueError("cache_runs needs C-contiguous arrays (views would be copies)")
    flat = [a.reshape(-1) for a in arrays]
    for i in range(0, flat[0].size, RUN):
        yield tuple(a[i : i + RUN] for a in flat)
