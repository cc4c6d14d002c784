"""Learning-rate and momentum schedules, table-tested."""

from __future__ import annotations

import math

import pytest

from worker.nn import schedules
from worker.nn.hyper import SCHEDULE_KINDS, Hyper


@pytest.mark.parametrize(("t", "expected"), [(0, 0.1), (1, 0.1), (7, 0.1), (1000, 0.1)])
def test_constant(t, expected):
    assert schedules.constant(t, 0.1) == expected


@pytest.mark.parametrize(
    ("t", "every", "factor", "expected"),
    [
        (0, 5, 0.5, 0.1),
        (4, 5, 0.5, 0.1),
        (5, 5, 0.5, 0.05),
        (9, 5, 0.5, 0.05),
        (10, 5, 0.5, 0.025),
        (3, 1, 0.1, 1e-4),
        (299, 100, 0.5, 0.025),
    ],
)
def test_step(t, every, factor, expected):
    assert schedules.step(t, 0.1, every, factor) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("t", "k", "expected"),
    [(0, 0.1, 0.1), (1, 0.1, 0.1 * math.exp(-0.1)), (10, 0.5, 0.1 * math.exp(-5)), (3, 0, 0.1)],
)
def test_exponential(t, k, expected):
    assert schedules.exponential(t, 0.1, k) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("t", "k", "expected"), [(0, 0.1, 0.1), (10, 0.1, 0.05), (30, 0.1, 0.025), (4, 0.0, 0.1)]
)
def test_inverse_time(t, k, expected):
    assert schedules.inverse_time(t, 0.1, k) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("history", "patience", "cuts"),
    [
        ([], 2, 0),  # nothing finished yet
        ([0.3], 1, 0),  # the first epoch always improves on nothing
        ([0.1, 0.2, 0.3, 0.4], 2, 0),  # no stall
        ([0.5, 0.4, 0.45], 2, 1),  # one stall of `patience` epochs
        ([0.5, 0.4], 2, 0),  # a stall shorter than patience
        ([0.5, 0.5, 0.5], 2, 1),  # equal to the best is no improvement
        ([0.5, 0.4, 0.4, 0.4], 2, 1),  # the counter restarts after a cut ...
        ([0.5, 0.4, 0.4, 0.4, 0.4], 2, 2),  # ... and counts a full patience again
        ([0.5, 0.4, 0.6, 0.5], 2, 0),  # an improvement resets the counter
        ([0.5, 0.4, 0.6, 0.5, 0.55], 2, 1),  # measured against the new best
        ([0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0], 1, 6),  # patience 1: every stalled epoch
        ([0.5, 0.4, 0.4, 0.9, 0.1, 0.1, 0.1], 3, 1),
    ],
)
def test_plateau_replays_history(history, patience, cuts):
    assert schedules.plateau(history, 0.1, 0.5, patience) == pytest.approx(0.1 * 0.5**cuts)


def hyper(**kw) -> Hyper:
    base = dict(
        learning_rate=0.1,
        schedule_every=3,
        schedule_factor=0.5,
        schedule_patience=2,
        schedule_k=0.2,
    )
    return Hyper(**{**base, **kw})


STALLED = [0.5, 0.4, 0.4]  # one plateau cut with patience 2


@pytest.mark.parametrize(
    ("schedule", "unit", "expected"),
    [
        # epoch=7 (in progress), iteration=25 steps taken, STALLED history
        ("constant", "epoch", 0.1),
        ("constant", "iteration", 0.1),
        ("step", "epoch", 0.1 * 0.5 ** (7 // 3)),
        ("step", "iteration", 0.1 * 0.5 ** (25 // 3)),
        ("exponential", "epoch", 0.1 * math.exp(-0.2 * 7)),
        ("exponential", "iteration", 0.1 * math.exp(-0.2 * 25)),
        ("inverse_time", "epoch", 0.1 / (1 + 0.2 * 7)),
        ("inverse_time", "iteration", 0.1 / (1 + 0.2 * 25)),
        ("plateau", "epoch", 0.05),
        ("plateau", "iteration", 0.05),  # plateau is per epoch whatever the unit
    ],
)
def test_lr_at(schedule, unit, expected):
    h = hyper(schedule=schedule, schedule_unit=unit)
    lr = schedules.lr_at(h, epoch=7, iteration=25, val_history=STALLED)
    assert type(lr) is float
    assert lr == pytest.approx(expected, rel=1e-12)


def test_lr_at_covers_every_schedule_kind():
    for kind in SCHEDULE_KINDS:
        assert schedules.lr_at(hyper(schedule=kind), 0, 0, []) == pytest.approx(0.1)


def test_lr_at_step_by_iteration_changes_within_an_epoch():
    h = hyper(schedule="step", schedule_unit="iteration", schedule_every=100)
    rates = [schedules.lr_at(h, 0, it, []) for it in (0, 99, 100, 199, 200)]
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


@pytest.mark.parametrize(
    ("epoch", "expected"), [(0, 0.5), (1, 0.9), (2, 0.95), (3, 0.99), (4, 0.99), (50, 0.99)]
)
def test_momentum_at_ramps_then_holds(epoch, expected):
    h = Hyper(momentum=0.7, momentum_schedule=(0.5, 0.9, 0.95, 0.99))
    assert schedules.momentum_at(h, epoch) == expected


@pytest.mark.parametrize("epoch", [0, 3, 100])
def test_momentum_at_without_schedule_is_momentum(epoch):
    assert schedules.momentum_at(Hyper(momentum=0.7), epoch) == 0.7
