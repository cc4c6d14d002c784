"""Ranking: score, then lower validation loss, then id; unfinished kinds last, in order."""

from __future__ import annotations

import math
from enum import Enum

import pytest

from coordinator.config import StageConfig
from coordinator.rank import TrialOutcome, is_scored, kept_for_refinement, rank, scored_trials


def t(trial_id, status="done", score=None, val_loss=None):
    return TrialOutcome(trial_id, status, score, val_loss, {"learning_rate": trial_id * 1e-3})


# (id, outcomes, expected trial ids best first)
CASES = [
    ("by-score", [t(1, score=0.5), t(2, score=0.9), t(3, score=0.7)], [2, 3, 1]),
    ("tie-lower-loss-wins", [t(1, score=0.9, val_loss=0.4), t(2, score=0.9, val_loss=0.3)],
     [2, 1]),
    ("tie-then-trial-id", [t(5, score=0.9, val_loss=0.3), t(2, score=0.9, val_loss=0.3)], [2, 5]),
    ("tie-missing-loss-last", [t(1, score=0.9), t(2, score=0.9, val_loss=2.0)], [2, 1]),
    ("nan-loss-like-missing", [t(1, score=0.9, val_loss=math.nan), t(2, score=0.9, val_loss=9.0)],
     [2, 1]),
    ("diverged-failed-cancelled-last-in-order",
     [t(1, "cancelled"), t(2, "failed"), t(3, "diverged"), t(4, score=0.1)], [4, 3, 2, 1]),
    ("diverged-below-any-done", [t(1, "diverged", score=0.99), t(2, score=0.01)], [2, 1]),
    ("no-score-last", [t(1, "done"), t(2, "running"), t(3, "cancelled"), t(4, score=0.2),
                       t(5, "done", score=math.nan)], [4, 3, 1, 2, 5]),
    ("same-status-by-id", [t(9, "failed"), t(3, "failed"), t(6, "diverged")], [6, 3, 9]),
    # a pruned trial's score is of fewer epochs: after every done one, by score, then the
    # unscored kinds (an unscored pruned one before diverged)
    ("pruned-after-done-by-score",
     [t(1, "pruned", score=0.99), t(2, score=0.01), t(3, "pruned", score=0.5),
      t(4, "diverged"), t(5, "pruned")], [2, 1, 3, 5, 4]),
    ("empty", [], []),
]


@pytest.mark.parametrize("outcomes, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rank(outcomes, expected):
    assert [o.trial_id for o in rank(outcomes)] == expected
    assert [o.trial_id for o in rank(reversed(outcomes))] == expected  # input order is irrelevant


def test_status_enums_rank_like_their_strings():
    class TrialStatus(str, Enum):
        done = "done"
        diverged = "diverged"
        failed = "failed"

    outcomes = [t(1, TrialStatus.failed), t(2, TrialStatus.diverged),
                t(3, TrialStatus.done, 0.5), t(4, TrialStatus.done, 0.8)]
    assert [o.trial_id for o in rank(outcomes)] == [4, 3, 2, 1]
    assert is_scored(outcomes[2]) and not is_scored(outcomes[1])


STAGE_RANKED = rank([t(i, score=i / 100) for i in range(1, 31)]
                    + [t(100 + i, "diverged") for i in range(10)] + [t(200, "failed")])


# (keep, expected count of the 30 done trials)
@pytest.mark.parametrize("keep, expected", [
    (0.25, 8),  # ceil(7.5)
    (0.1, 3),
    (0.01, 2),  # at least two: one trial cannot span a range (issue 12)
    (0.99, 30),
    (5, 5),  # a count
    (1, 1),
    (50, 30),  # more than there are: all done trials, never a diverged one
])
def test_kept_for_refinement_fraction_or_count(keep, expected):
    kept = kept_for_refinement(STAGE_RANKED, StageConfig(trials=41, epochs=1, keep=keep))
    assert len(kept) == expected
    assert [k.trial_id for k in kept] == list(range(30, 30 - expected, -1))  # the best ones
    assert all(k.status == "done" for k in kept)


def test_keep_fraction_is_not_fooled_by_float_round_off():
    ranked = rank([t(i, score=i / 100) for i in range(50)])
    assert 0.14 * 50 > 7  # 7.000000000000001
    assert len(kept_for_refinement(ranked, StageConfig(50, 1, keep=0.14))) == 7


def test_kept_is_a_fraction_of_done_trials_only():
    ranked = rank([t(1, score=0.9), t(2, score=0.8), t(7, score=0.7), t(8, score=0.6),
                   t(9, score=0.5), t(3, "diverged"), t(4, "diverged"), t(5, "failed"),
                   t(6, "done")])
    # ceil(0.5 x 5 scored), not a fraction of all 9
    assert [k.trial_id for k in kept_for_refinement(ranked, StageConfig(9, 1, keep=0.5))] == [
        1, 2, 7]
    no_done = rank([t(1, "diverged"), t(2, "failed")])
    assert kept_for_refinement(no_done, StageConfig(2, 1, keep=0.5)) == []
    assert kept_for_refinement(no_done, StageConfig(2, 1, keep=3)) == []


def test_pruned_trials_shape_the_next_ranges_only_when_nothing_is_done():
    pruned = [t(10 + i, "pruned", score=i / 10) for i in range(5)]
    stage = StageConfig(trials=8, epochs=5, keep=0.25)
    kept = kept_for_refinement(rank([*pruned, t(1, score=0.05), t(2, "diverged")]), stage)
    assert [k.trial_id for k in kept] == [1]  # the one done trial, however low
    kept = kept_for_refinement(rank([*pruned, t(2, "diverged")]), stage)
    assert [k.trial_id for k in kept] == [14, 13]


def test_pruned_trials_count_below_every_done_one_for_the_flags():
    ranked = rank([t(1, "pruned", score=0.9), t(2, score=0.2), t(3, score=0.3),
                   t(4, "diverged"), t(5, "failed")])
    utilities = {p["learning_rate"]: u for p, u in scored_trials(ranked)}
    assert utilities == {0.003: 3.0, 0.002: 2.0, 0.001: 1.0, 0.004: None}
