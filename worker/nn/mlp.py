"""The built-in model ``mlp``: the fully connected classifier in the CS231n model protocol.

``MLP(input_shape, num_classes, **hyper)`` holds ``params`` (``W1, b1, ..., WL, bL``) and
``loss(X, y=None)`` returns class scores when ``y`` is None, else ``(loss, grads)``. It
registers under the entry-point group ``hpsweep.models`` like any plug-in model (see
pyproject.toml) and is trained by the same code; what keeps it fast is ``model.Net``
(preallocated float32 buffers, gradients written into one flat arena, exposed as
``flat_grads``) and ``n_correct`` (the minibatch's correct predictions, counted from the
scores the loss already has).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from worker.nn import model


def hidden_widths(hidden_size: int = 100, depth: int = 1,
                  hidden: Sequence[int] = ()) -> tuple[int, ...]:
    """The hidden widths: ``hidden`` when given, else ``depth`` layers of ``hidden_size``."""
    if hidden:
        return tuple(int(h) for h in hidden)
    return (int(hidden_size),) * int(depth)


class MLP:
    """affine -> ReLU (-> dropout) ... -> affine -> softmax, L2 on the weights.

    Images (N, C, H, W) are flattened to (N, C*H*W). Initial weights come from ``rng``
    (He initialisation, or ``weight_scale`` when it is > 0); dropout masks from the
    ``rng`` given to ``loss``.
    """

    eval_batch = model.EVAL_BATCH

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden_size: int = 100,
                 depth: int = 1, hidden: Sequence[int] = (), dropout: float = 0.0,
                 reg: float = 0.0, weight_scale: float = 0.0,
                 rng: np.random.Generator | None = None, dtype: type = np.float32) -> None:
        dims = (math.prod(input_shape), *hidden_widths(hidden_size, depth, hidden),
                int(num_classes))
        rng = rng if rng is not None else np.random.default_rng(0)
        self.params = model.init_params(dims, rng, float(weight_scale), dtype)
        self.reg, self.dropout = float(reg), float(dropout)
        self.n_correct = 0
        self._net = model.Net(dims, dtype)
        self.flat_grads = self._net.flat_grads  # loss() writes its grads into views of this

    def loss(self, X: np.ndarray, y: np.ndarray | None = None,
             rng: np.random.Generator | None = None
             ) -> np.ndarray | tuple[float, dict[str, np.ndarray]]:
        """Scores (N, C) of X when ``y`` is None (evaluation: no dropout), else the
        minibatch's loss (data + L2) and gradients (arrays owned by the model, overwritten
        by the next call)."""
        if X.ndim > 2:
            X = X.reshape(X.shape[0], -1)  # (N, C, H, W) -> (N, C*H*W)
        if y is None:
            return model.scores(self.params, X.astype(self._net.dtype, copy=False))
        loss, grads = self._net.loss_and_grads(self.params, X, y, self.reg, self.dropout, rng)
        self.n_correct = self._net.n_correct
        return loss, grads
