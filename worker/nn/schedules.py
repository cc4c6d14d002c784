"""Learning-rate and momentum schedules: pure functions of the training progress.

They hand a rate to each optimizer step and never touch optimizer state, so a
resumed trial gets the same rates from its epoch, iteration and validation
history alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from worker.nn.hyper import Hyper


def constant(t: float, lr0: float) -> float:
    """The same rate at every ``t``."""
    return lr0


def step(t: int, lr0: float, every: int, factor: float) -> float:
    """Multiply the rate by ``factor`` every ``every`` units of ``t``."""
    return lr0 * factor ** (t // every)


def exponential(t: float, lr0: float, k: float) -> float:
    """Exponential decay ``lr0 * exp(-k t)``."""
    return lr0 * math.exp(-k * t)


def inverse_time(t: float, lr0: float, k: float) -> float:
    """1/t decay ``lr0 / (1 + k t)``."""
    return lr0 / (1 + k * t)


def plateau(val_history: Sequence[float], lr0: float, factor: float, patience: int) -> float:
    """The rate after replaying the validation accuracies of the finished epochs.

    Each time ``patience`` epochs in a row fail to beat the best accuracy so far,
    the rate is multiplied by ``factor`` and the count of stalled epochs restarts.
    """
    lr, best, stalled = lr0, -math.inf, 0
    for acc in val_history:
        if acc > best:
            best, stalled = acc, 0
            continue
        stalled += 1
        if stalled == patience:
            lr, stalled = lr * factor, 0
    return lr


def lr_at(h: Hyper, epoch: int, iteration: int, val_history: Sequence[float]) -> float:
    """The learning rate for one step of the trial ``h``.

    ``epoch`` is the 0-based epoch in progress, ``iteration`` the number of steps
    already taken over the whole training, ``val_history`` the val accuracies of
    the finished epochs. ``h.schedule_unit`` picks what ``t`` counts; plateau
    always works per epoch.
    """
    t = iteration if h.schedule_unit == "iteration" else epoch
    lr0 = h.learning_rate
    match h.schedule:
        case "constant":
            return constant(t, lr0)
        case "step":
            return step(t, lr0, h.schedule_every, h.schedule_factor)
        case "plateau":
            return plateau(val_history, lr0, h.schedule_factor, h.schedule_patience)
        case "exponential":
            return exponential(t, lr0, h.schedule_k)
        case "inverse_time":
            return inverse_time(t, lr0, h.schedule_k)
    raise ValueError(f"unknown schedule {h.schedule!r}")


def momentum_at(h: Hyper, epoch: int) -> float:
    """``momentum`` for the 0-based ``epoch``: the ramp (last value held), else ``h.momentum``."""
    ramp = h.momentum_schedule
    if ramp:
        return ramp[min(epoch, len(ramp) - 1)]
    return h.momentum
