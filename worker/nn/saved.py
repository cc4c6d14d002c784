"""Checkpoints read outside a trial: the model and weights they hold, and trimming.

``model_from_checkpoint`` rebuilds the model a checkpoint was trained with (its name,
input shape, classes and constructor hyperparameters travel in the checkpoint) holding
its raw or running-average weights: what ensembles evaluate, for any model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from worker.nn import checkpoint, model, protocol
from worker.nn.checkpoint import CheckpointError
from worker.nn.protocol import ModelSpec

DTYPE = np.float32


def with_prefix(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose key starts with ``prefix``, keyed without it."""
    return {k[len(prefix) :]: a for k, a in arrays.items() if k.startswith(prefix)}


def weights(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Float32 copies of the arrays whose key starts with ``prefix``, prefix removed."""
    return {k: np.array(a, dtype=DTYPE, order="C") for k, a in with_prefix(arrays, prefix).items()}


def fill(dest: dict[str, np.ndarray], src: Mapping[str, np.ndarray], what: str) -> None:
    """Copy ``src``'s arrays into ``dest``'s (same keys and shapes, else ValueError)."""
    protocol.check_like(src, dest, what)
    for k, d in dest.items():
        d[...] = src[k]


def saved_spec(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The checkpoint's model: name, input shape, classes, constructor hyperparameters.

    A checkpoint written before models were pluggable holds the MLP's weights only.
    """
    if "model" in arrays:
        saved = json.loads(str(arrays["model"]))
        saved["input_shape"] = tuple(int(d) for d in saved["input_shape"])
        return saved
    n = model.n_layers(with_prefix(arrays, "param."))
    return {"name": "mlp", "input_shape": (int(arrays["param.W1"].shape[0]),),
            "num_classes": int(arrays[f"param.b{n}"].shape[0]),
            "hyper": {"hidden": [int(arrays[f"param.b{i}"].shape[0]) for i in range(1, n)]}}


def model_from_checkpoint(data: bytes, resolve: Callable[[str], type],
                          which: str = "raw") -> Any:
    """The model a checkpoint was trained with, holding its raw (``"raw"``) or
    running-average (``"ema"``) weights; ``resolve`` maps the model's name to its class.
    Raises ``CheckpointError`` when the weights are missing or do not fit the model."""
    if which not in ("raw", "ema"):
        raise ValueError(f"which must be 'raw' or 'ema', got {which!r}")
    arrays = checkpoint.decode(data)
    params = weights(arrays, "param." if which == "raw" else "ema.")
    if not params:
        raise CheckpointError(f"checkpoint holds no {which} weights")
    try:
        saved = saved_spec(arrays)
        spec = ModelSpec(saved["name"], resolve(saved["name"]), saved["input_shape"],
                         int(saved["num_classes"]), protocol.coerce(
                             resolve(saved["name"]), saved.get("hyper", {})))
        net = spec.build(np.random.default_rng(0), DTYPE)  # weights overwritten below
        fill(net.params, params, f"checkpoint {which} weights")
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint weights do not fit their model: {e}") from e
    return net


def params_from_checkpoint(data: bytes, which: str = "raw") -> dict[str, np.ndarray]:
    """The raw (``"raw"``) or running-average (``"ema"``) weights stored in a checkpoint."""
    if which not in ("raw", "ema"):
        raise ValueError(f"which must be 'raw' or 'ema', got {which!r}")
    params = weights(checkpoint.decode(data), "param." if which == "raw" else "ema.")
    if not params:
        raise CheckpointError(f"checkpoint holds no {which} weights")
    return params


_TRAINING_ONLY = ("optim.", "rng")  # what only resuming needs: update-rule state, RNG


def weights_only(data: bytes) -> bytes | None:
    """The checkpoint without what only resuming needs (optimizer state, RNG state), for
    a trial that will never train again: ``params_from_checkpoint`` still reads its raw
    and EMA weights. None when ``data`` holds nothing to drop (already weights-only)."""
    arrays = checkpoint.decode(data)
    kept = {k: a for k, a in arrays.items() if not k.startswith(_TRAINING_ONLY)}
    return None if len(kept) == len(arrays) else checkpoint.encode(kept)
