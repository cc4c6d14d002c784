"""Sweep files and datasets for tests: one config writer with presets, one blob maker.

Presets (``write_config(path, preset, ...)``):

- ``spiral``: the built-in spiral dataset, a tiny SGD net, two stages of 6 and 3 trials —
  seconds on one core; the coordinator and storage tests' default.
- ``blobs``: for a user's ``.npz`` (``dataset=``), a 512-unit momentum net over a
  learning-rate range: ~0.1 s an epoch on the fault tests' 12,000 x 128 blobs.
- ``hosts``: the many-machines tests' sweep over learning rate and hidden size (Adam).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import yaml

LR = {"dist": "log_uniform", "low": 1e-3, "high": 3e-2}
PRESETS: dict[str, dict[str, Any]] = {
    "spiral": {
        "name": "t", "dataset": "spiral", "seed": 0,
        "train": {"depth": 1, "hidden_size": 16, "batch_size": 64, "update_rule": "sgd"},
        "space": {"learning_rate": {"dist": "log_uniform", "low": 1e-3, "high": 1.0},
                  "reg": {"dist": "log_uniform", "low": 1e-6, "high": 1e-2}},
        "stages": [{"trials": 6, "epochs": 1}, {"trials": 3, "epochs": 3}],
    },
    "blobs": {
        "name": "fault", "seed": 3,
        "train": {"depth": 1, "hidden_size": 512, "batch_size": 64, "update_rule": "momentum",
                  "reg": 1e-4},
        "space": {"learning_rate": LR},
    },
    "hosts": {
        "name": "mh", "seed": 0,
        "train": {"depth": 1, "batch_size": 32, "update_rule": "adam"},
        "space": {"learning_rate": LR,
                  "hidden_size": {"dist": "int_log_uniform", "low": 16, "high": 64}},
    },
}

Stages = list[tuple[int, int]] | list[dict[str, Any]]


def write_config(path: Path, preset: str = "spiral", *, dataset: Any = None,
                 stages: Stages | None = None, hidden: int | tuple[int, int] | None = None,
                 batch_size: int | None = None, **top: Any) -> Path:
    """Write a sweep file: ``preset`` with ``stages`` as (trials, epochs) pairs or dicts,
    ``hidden`` (a size, or a (low, high) range searched) and ``batch_size`` set, any
    top-level key replaced."""
    cfg = copy.deepcopy(PRESETS[preset])
    cfg.update(copy.deepcopy(top))
    if dataset is not None:  # a file, a built-in's name, or a spec (a mapping)
        cfg["dataset"] = str(dataset) if isinstance(dataset, Path) else dataset
    if stages is not None:
        cfg["stages"] = [s if isinstance(s, dict) else {"trials": s[0], "epochs": s[1]}
                         for s in stages]
    if isinstance(hidden, tuple):
        cfg["space"]["hidden_size"] = {"dist": "int_log_uniform", "low": hidden[0],
                                       "high": hidden[1]}
    elif hidden is not None:
        cfg["train"]["hidden_size"] = hidden
    if batch_size is not None:
        cfg["train"]["batch_size"] = batch_size
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_blobs(path: Path, n: int = 600, d: int = 8, classes: int = 3, *, spread: float = 2.0,
                noise: float = 1.5, seed: int = 0) -> Path:
    """A user's ``.npz``: ``classes`` Gaussian blobs (centres ~ N(0, spread²)) in ``d``
    dimensions with N(0, noise²) scatter; X float32, y int64."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, spread, size=(classes, d))
    y = rng.integers(0, classes, size=n)
    X = (centers[y] + rng.normal(0.0, noise, size=(n, d))).astype(np.float32)
    np.savez(path, X=X, y=y.astype(np.int64))
    return path
