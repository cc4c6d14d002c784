"""conv - ReLU - 2x2 max pool - affine - softmax, in NumPy, float32 (CS231n style).

The model protocol hpsweep trains: ``ConvNet(input_shape, num_classes, **hyper)`` holds
``params`` and ``loss(X, y=None)`` returns scores (N, C) when ``y`` is None, else
``(loss, grads)``. The convolution is im2col: every receptive field becomes a row
(through a strided view, copied once), so the layer is one matrix product.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class ConvNet:
    """``num_filters`` filters of ``filter_size`` x ``filter_size`` (stride 1, 'same'
    padding) on (C, H, W) images (flat rows are read as square images of ``channels``),
    then ReLU, 2x2 max pooling, one affine layer to the classes and a softmax loss with
    L2 regularisation ``0.5 * reg * sum(W**2)``.

    Weights are He-initialised (or ``weight_scale * N(0, 1)`` when it is > 0) from ``rng``:
    hpsweep passes the trial's generator, so a sweep's runs are reproducible.
    """

    eval_batch = 512  # rows per evaluation call: im2col's rows are N * H * W

    def __init__(self, input_shape, num_classes, num_filters=8, filter_size=3, reg=0.0,
                 weight_scale=0.0, channels=1, rng=None, dtype=np.float32):
        self.image_shape = _image_shape(tuple(int(d) for d in input_shape), int(channels))
        c, h, w = self.image_shape
        f, k = int(num_filters), int(filter_size)
        if k % 2 == 0:
            raise ValueError(f"filter_size must be odd ('same' padding), got {k}")
        rng = rng if rng is not None else np.random.default_rng(0)
        self.reg, self.pad = float(reg), k // 2
        self.pooled = (h // 2, w // 2)
        n_flat = f * self.pooled[0] * self.pooled[1]

        def init(shape, fan_in):
            std = float(weight_scale) or math.sqrt(2.0 / fan_in)
            return (std * rng.standard_normal(shape)).astype(dtype)

        self.params = {
            "W1": init((f, c, k, k), c * k * k),
            "b1": np.zeros(f, dtype),
            "W2": init((n_flat, int(num_classes)), n_flat),
            "b2": np.zeros(int(num_classes), dtype),
        }
        self.n_correct = 0  # correct predictions in the last training minibatch

    def loss(self, X, y=None):
        p = self.params
        W1, b1, W2, b2 = p["W1"], p["b1"], p["W2"], p["b2"]
        n = X.shape[0]
        X = X.astype(W1.dtype, copy=False).reshape(n, *self.image_shape)  # flat rows: images
        f, _, k, _ = W1.shape
        # conv as one matmul: cols (N*H*W, C*k*k) @ W1 (C*k*k, F) -> a (N, H, W, F)
        xp = np.pad(X, ((0, 0), (0, 0), (self.pad, self.pad), (self.pad, self.pad)))
        win = sliding_window_view(xp, (k, k), axis=(2, 3))  # (N, C, H, W, k, k)
        hh, ww = win.shape[2], win.shape[3]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * hh * ww, -1)
        a = (cols @ W1.reshape(f, -1).T + b1).reshape(n, hh, ww, f)
        np.maximum(a, 0, out=a)  # ReLU
        # 2x2 max pool (an odd last row/column is dropped): r (N, H/2, 2, W/2, 2, F)
        ph, pw = self.pooled
        r = a[:, : 2 * ph, : 2 * pw].reshape(n, ph, 2, pw, 2, f)
        pooled = r.max(axis=(2, 4))  # (N, H/2, W/2, F)
        flat = pooled.reshape(n, -1)
        scores = flat @ W2 + b2
        if y is None:
            return scores
        loss, dscores = _softmax_loss(scores, y)
        self.n_correct = int(np.count_nonzero(scores.argmax(axis=1) == y))
        loss += 0.5 * self.reg * (float(np.sum(W1 * W1)) + float(np.sum(W2 * W2)))
        grads = {"W2": flat.T @ dscores + self.reg * W2, "b2": dscores.sum(axis=0)}
        dpooled = (dscores @ W2.T).reshape(pooled.shape)
        # the gradient goes to the window's maximum (and nowhere a ReLU output was 0)
        dr = (r == pooled[:, :, None, :, None, :]) * dpooled[:, :, None, :, None, :]
        da = np.zeros_like(a)
        da[:, : 2 * ph, : 2 * pw] = dr.reshape(n, 2 * ph, 2 * pw, f)
        da *= a > 0
        dout = da.reshape(-1, f)  # (N*H*W, F)
        grads["W1"] = (dout.T @ cols).reshape(W1.shape) + self.reg * W1
        grads["b1"] = dout.sum(axis=0)
        return loss, grads


def _image_shape(input_shape, channels):
    """(C, H, W) of the input: given, or square images of ``channels`` from flat rows."""
    if len(input_shape) == 3:
        return input_shape
    if len(input_shape) == 1:
        side = math.isqrt(input_shape[0] // max(channels, 1))
        if channels * side * side == input_shape[0]:
            return (channels, side, side)
    raise ValueError(f"ConvNet needs (C, H, W) images, or flat rows of `channels` square "
                     f"images; got input shape {input_shape} with channels={channels}")


def _softmax_loss(scores, y):
    """Mean cross-entropy of softmax(scores) and d(loss)/d(scores)."""
    n = scores.shape[0]
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -float(log_probs[np.arange(n), y].mean())
    dscores = np.exp(log_probs)
    dscores[np.arange(n), y] -= 1
    dscores /= n
    return loss, dscores
