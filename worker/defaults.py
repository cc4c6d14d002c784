"""Defaults defined once: the CLI's options and the worker program both read them.

A module of its own, importing only the standard library's lightest parts, so that
``hpsweep --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

DEFAULT_DB = "sqlite:///hpsweep.db"  # relative: the folder the command runs in
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "hpsweep"  # the RQ queue
# Queued trials Redis carries per sweep: the first ENQUEUE_WINDOW by id. The rest wait in
# the database and every reconcile pass tops the window up, so a million-trial sweep
# costs Redis ~20 MB (an RQ job is ~2 KB) and a launch ~2 s of enqueueing, not minutes.
ENQUEUE_WINDOW = 10_000

# The sweep-wide settings a worker reads from a sweep's stored config. The config
# schema (coordinator.config.SweepConfig) takes its defaults from here.
VAL_FRACTION = 0.14  # the fixed split: validation rows
TEST_FRACTION = 0.14  # ... and held-out test rows
SELECT = "best"  # a trial's score: raw, ema or the best of both
KEEP_SNAPSHOTS = 0  # extra per-epoch checkpoints for snapshot ensembles
MODEL = "mlp"  # the registered model a sweep trains (worker.models)
PREPROCESS = "standardize"  # per-feature standardisation with the training rows' statistics


@dataclass(frozen=True)
class SweepSettings:
    """The settings of a sweep a worker needs, typed, from its stored config."""

    select: str = SELECT
    keep_snapshots: int = KEEP_SNAPSHOTS
    val_fraction: float = VAL_FRACTION
    test_fraction: float = TEST_FRACTION
    model: str = MODEL
    preprocess: str = PREPROCESS

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> SweepSettings:
        """Read from a stored config; keys it lacks (an older config) take the defaults."""
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})
