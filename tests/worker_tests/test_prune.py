"""The stage ``prune`` rule, pure: which epochs it judges, how it counts the earlier trials
of the stage, when it must wait, and what a bad ``prune`` value is told."""

from __future__ import annotations

import pytest

from storage.pruning import PeerAt
from worker.prune import PruneRule, problems, score_at, standing, verdict


def at(idx: int, acc: float | None, loss: float = 1.0, status: str = "running",
       **ema: float) -> PeerAt:
    """A trial with a curve row at the epoch (``acc`` None: that epoch diverged)."""
    return PeerAt(idx, status, True, acc, None if acc is None else loss,
                  ema.get("acc"), ema.get("loss"), 0.1)


def gone(idx: int, status: str) -> PeerAt:
    """A trial without a row at the epoch."""
    return PeerAt(idx, status, False)


@pytest.mark.parametrize("rule, epochs, judged", [
    (PruneRule("median", after=1), 5, [1, 2, 3, 4]),
    (PruneRule("median", after=2), 5, [2, 3, 4]),
    (PruneRule("median", after=1), 1, []),  # a one-epoch stage never prunes
    (PruneRule("halving", after=1, eta=3), 20, [1, 3, 9]),
    (PruneRule("halving", after=2, eta=2), 20, [2, 4, 8, 16]),
    (PruneRule("halving", after=2, eta=2), 16, [2, 4, 8]),  # never the last epoch
])
def test_the_epochs_a_rule_judges(rule: PruneRule, epochs: int, judged: list[int]) -> None:
    assert [e for e in range(epochs + 2) if rule.checks_at(e, epochs)] == judged


MEDIAN = PruneRule("median", after=1, min_trials=3)


@pytest.mark.parametrize("own, earlier, prune, better, n", [
    # behind 3 of 4 (more than half): stopped; behind 2 of 4 (half): trains on
    (0.5, [0.6, 0.7, 0.8, 0.4], True, 3, 4),
    (0.65, [0.6, 0.7, 0.8, 0.4], False, 2, 4),
    # a tie is not "better"
    (0.7, [0.7, 0.7, 0.7], False, 0, 3),
    # fewer than min_trials earlier trials: never stopped
    (0.1, [0.9, 0.9], False, 2, 2),
])
def test_median_counts_the_earlier_trials(own: float, earlier: list[float], prune: bool,
                                          better: int, n: int) -> None:
    peers = [at(i, a) for i, a in enumerate(earlier)]
    v = verdict(MEDIAN, at(len(earlier), own), peers, "raw")
    assert (v.ready, v.prune, v.better, v.n) == (True, prune, better, n)


def test_loss_breaks_accuracy_ties() -> None:
    peers = [at(0, 0.7, loss=0.5), at(1, 0.7, loss=0.6), at(2, 0.7, loss=0.4)]
    v = verdict(MEDIAN, at(3, 0.7, loss=0.9), peers, "raw")
    assert (v.prune, v.better) == (True, 3)


def test_trials_that_lost_count_as_behind_and_crashes_say_nothing() -> None:
    earlier = [at(0, 0.9), at(1, 0.8), gone(2, "pruned"), gone(3, "diverged"),
               at(4, None, status="diverged"), gone(5, "failed"), gone(6, "cancelled")]
    v = verdict(MEDIAN, at(7, 0.5), earlier, "raw")
    # counted: 0.9, 0.8 and three losers; failed/cancelled left out; 2 of 5 better
    assert (v.ready, v.prune, v.better, v.n) == (True, False, 2, 5)
    v = verdict(MEDIAN, at(7, 0.5), [*earlier, at(8, 0.95)], "raw")
    assert (v.prune, v.better, v.n) == (False, 3, 6)  # half is not more than half
    v = verdict(MEDIAN, at(7, 0.5), [*earlier, at(8, 0.95), at(9, 0.6)], "raw")
    assert (v.prune, v.better, v.n) == (True, 4, 7)


def test_no_verdict_until_every_earlier_trial_got_there() -> None:
    earlier = [at(0, 0.9), gone(1, "running"), at(2, 0.3), gone(3, "queued"), at(4, 0.2)]
    v = verdict(MEDIAN, at(5, 0.1), earlier, "raw")
    assert not v.ready and [p.idx for p in v.waiting_on] == [1, 3]
    # a done trial has every epoch's row; one still running may have this epoch's already
    assert verdict(MEDIAN, at(5, 0.1), [at(0, 0.9, status="done"), at(1, 0.8), at(2, 0.7)],
                   "raw").prune


def test_halving_keeps_the_top_third() -> None:
    rule = PruneRule("halving", after=1, min_trials=3, eta=3)
    earlier = [at(i, a) for i, a in enumerate([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])]
    assert not verdict(rule, at(6, 0.75), earlier, "raw").prune  # behind 2 of 6
    assert verdict(rule, at(6, 0.65), earlier, "raw").prune  # behind 3 of 6 (> 1/3)


def test_the_score_follows_select() -> None:
    row = PeerAt(0, "running", True, 0.6, 1.0, 0.7, 0.9)  # raw 0.6, ema 0.7
    assert score_at(row, "raw") == (0.6, -1.0)
    assert score_at(row, "ema") == (0.7, -0.9)
    assert score_at(row, "best") == (0.7, -0.9)
    worse_ema = PeerAt(0, "running", True, 0.6, 1.0, 0.5, 0.9)
    assert score_at(worse_ema, "best") == (0.6, -1.0)
    assert standing(PeerAt(0, "diverged", True), "best") == "behind"


@pytest.mark.parametrize("value, epochs, expected", [
    ({"rule": "median", "after": 2}, 5, []),
    ({"rule": "halving", "after": 1, "eta": 3, "min_trials": 8}, 20, []),
    ({"rule": "mean"}, 5, [("rule", "unknown rule 'mean'; expected one of median, halving")]),
    ({"after": 0}, 5, [("after", "expected an integer >= 1, got 0")]),
    ({"after": 5}, 5, [("after", "must be below the stage's epochs (5): a trial is judged at "
                                 "the end of an epoch before its last, got 5")]),
    ({"min_trials": True}, 5, [("min_trials", "expected an integer >= 1, got True")]),
    ({"eta": 1}, 5, [("eta", "expected an integer >= 2, got 1")]),
    ({"ater": 2}, 5, [("ater", "unknown key; expected one of rule, after, min_trials, eta")]),
    ("median", 5, [("", "expected a mapping like {rule: median, after: 1}, got 'median'")]),
])
def test_bad_values_are_named(value: object, epochs: int,
                              expected: list[tuple[str, str]]) -> None:
    assert problems(value, epochs) == expected
