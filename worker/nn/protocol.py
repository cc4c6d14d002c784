"""The model protocol (CS231n's): how hpsweep builds, calls and evaluates any model.

A model is a class built as ``Model(input_shape, num_classes, **hyper)`` whose instances
hold ``params`` (a dict of float arrays) and whose ``loss(X, y=None)`` returns class
scores (N, C) when ``y`` is None (evaluation mode) and ``(loss, grads)`` otherwise,
``grads`` keyed like ``params``. Optional, by keyword name:

- ``rng``: a constructor or ``loss`` that accepts it receives the trial's
  ``np.random.Generator`` (initial weights, dropout masks); its state is checkpointed
  with the trial, so a resumed trial draws exactly what an uninterrupted one would.
- ``dtype``: a constructor that accepts it gets float32 for training, float64 for
  gradient checks (otherwise the trainer casts ``params`` itself).
- ``n_correct`` (attribute): correct predictions of the last ``loss(X, y)`` minibatch,
  for the training accuracy at no cost; without it, the accuracy of up to 1,000
  training examples after each epoch is reported (as CS231n's ``Solver`` does).
- ``eval_batch`` (attribute): rows per evaluation call (default 256).
- ``flat_grads`` (attribute): a 1-D array into which ``loss`` writes its gradients, as
  views laid out in ``params``' order and shapes; the trainer then steps it directly.

The trainer replaces each array of ``params`` by a view of one flat arena (same values),
so a model must read its weights from ``self.params`` in every ``loss`` call and never
keep other references to them. Pure Python and NumPy: resolving a model's name to its
class is ``worker.models``' job.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.nn import layers

DEFAULT_EVAL_BATCH = 256
# constructor parameters hpsweep supplies itself: never hyperparameters
SUPPLIED = ("input_shape", "num_classes", "rng", "dtype")


def accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` (by name or through ``**kwargs``)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    p = sig.parameters.get(name)
    if p is not None:
        return p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    return any(q.kind is q.VAR_KEYWORD for q in sig.parameters.values())


def hyper_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor's hyperparameters: its keyword parameters besides ``SUPPLIED``."""
    sig = inspect.signature(cls)
    return {n: p for n, p in sig.parameters.items() if n not in SUPPLIED
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def coerce(cls: type, hyper: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``hyper`` the constructor takes, typed like its defaults (a searched
    integer comes back from SQL as a float: ``16.0`` becomes ``16`` for an int default)."""
    out = {}
    for name, p in hyper_parameters(cls).items():
        if name not in hyper:
            continue
        v = hyper[name]
        d = p.default
        if isinstance(d, int) and not isinstance(d, bool) and isinstance(v, float) \
                and v.is_integer():
            v = int(v)
        elif isinstance(d, tuple) and isinstance(v, list):
            v = tuple(v)
        out[name] = v
    return out


@dataclass(frozen=True)
class ModelSpec:
    """A model class with everything needed to build it again: for checkpoints."""

    name: str
    cls: type
    input_shape: tuple[int, ...]
    num_classes: int
    hyper: dict[str, Any] = field(default_factory=dict)  # constructor keyword arguments

    def build(self, rng: np.random.Generator | None, dtype: type = np.float32) -> Any:
        """A new instance; its ``params`` are C-contiguous arrays of ``dtype``."""
        kwargs = dict(self.hyper)
        if rng is not None and accepts(self.cls, "rng"):
            kwargs["rng"] = rng
        if accepts(self.cls, "dtype"):
            kwargs["dtype"] = dtype
        m = self.cls(self.input_shape, self.num_classes, **kwargs)
        params = getattr(m, "params", None)
        if not isinstance(params, dict) or not params:
            raise TypeError(f"model {self.name!r}: `params` must be a non-empty dict of arrays")
        for k, p in params.items():
            if not isinstance(k, str) or not k or not isinstance(p, np.ndarray) \
                    or p.dtype.kind != "f":
                raise TypeError(f"model {self.name!r}: params[{k!r}] must be a float array "
                                "under a non-empty string key")
            if p.dtype != dtype or not p.flags.c_contiguous:
                params[k] = np.ascontiguousarray(p, dtype=dtype)
        return m

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "input_shape": list(self.input_shape),
                           "num_classes": self.num_classes, "hyper": self.hyper},
                          sort_keys=True)


def loss_takes_rng(m: Any) -> bool:
    return accepts(m.loss, "rng")


def eval_batch(m: Any) -> int:
    return max(1, int(getattr(m, "eval_batch", DEFAULT_EVAL_BATCH)))


def scores(m: Any, X: np.ndarray, batch: int | None = None) -> Any:
    """Yield the model's class scores of X, ``batch`` rows at a time (evaluation mode)."""
    batch = batch or eval_batch(m)
    for start in range(0, X.shape[0], batch):
        s = np.asarray(m.loss(X[start : start + batch]))
        yield start, s if s.dtype.kind == "f" else s.astype(np.float64)


def predict_proba(m: Any, X: np.ndarray) -> np.ndarray:
    """Softmax class probabilities (N, C) of X under the model's current ``params``."""
    out: np.ndarray | None = None
    for start, s in scores(m, X):
        s = s - s.max(axis=1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=1, keepdims=True)
        if out is None:
            out = np.empty((X.shape[0], s.shape[1]), s.dtype)
        out[start : start + s.shape[0]] = s
    return out if out is not None else np.empty((0, 0), np.float32)


def evaluate(m: Any, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(data_loss, accuracy)`` of X, y under the model; NaN for both when N is 0."""
    n = X.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    loss_sum, n_correct = 0.0, 0
    for start, s in scores(m, X):
        yb = y[start : start + s.shape[0]]
        n_correct += int(np.count_nonzero(s.argmax(axis=1) == yb))
        if not s.flags.c_contiguous or not s.flags.writeable:
            s = np.array(s, order="C")
        loss, _ = layers.softmax_loss(s, yb, out=s)  # in place over the scores
        loss_sum += loss * len(yb)
    return loss_sum / n, n_correct / n


def shapes_of(params: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(p.shape) for k, p in params.items()}


def check_like(found: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
               what: str) -> None:
    """Raise ValueError unless ``found`` has exactly ``expected``'s keys (any order) and
    shapes."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise ValueError(f"{what} do not match the model's params (missing {missing}, "
                         f"unexpected {extra})")
    for k, p in expected.items():
        if tuple(found[k].shape) != tuple(p.shape):
            raise ValueError(f"{what}[{k!r}] has shape {tuple(found[k].shape)}, the model's "
                             f"params[{k!r}] {tuple(p.shape)}")


def input_shape_of(shape: int | Sequence[int]) -> tuple[int, ...]:
    """``(n_features,)`` for an int, else the shape as a tuple of ints."""
    return (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(d) for d in shape)

