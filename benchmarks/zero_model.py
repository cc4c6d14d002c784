"""``zero``: a model that trains in ~0 ms, for ``coordination.py`` only (never shipped).

One parameter, zero gradients, all-zero class scores: a trial of it costs the framework's
bookkeeping (claim, curve row, checkpoint, finish, RQ) and nothing else. The benchmark
registers it for its worker processes the way the tests register plug-ins
(``tests/support/plugins.py``: a ``.dist-info`` in a temporary folder on ``PYTHONPATH``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

DIST, ENTRY_POINT = "hpsweep-bench-zero", {"zero": "zero_model:Zero"}


class Zero:
    def __init__(self, input_shape: tuple[int, ...], num_classes: int,
                 dtype: type = np.float32) -> None:
        self.params = {"W": np.zeros(1, dtype)}
        self.flat_grads = np.zeros(1, dtype)
        self.n_correct = 0
        self.num_classes, self.dtype = num_classes, dtype

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        if y is None:  # evaluation scores (the trainer computes their loss in place)
            return np.zeros((X.shape[0], self.num_classes), self.dtype)
        return 0.0, {"W": self.flat_grads}
