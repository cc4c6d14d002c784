"""Ranking a stage's trials, and which of them shape the next ranges. Pure, no I/O."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator.config import StageConfig

# after every scored `done` trial, in this order; any other status (or a trial
# without a score) comes last of all. A ``pruned`` trial stopped early behind its stage's
# earlier trials: its score is of fewer epochs, so it ranks (by score) after every done one
_LAST = ("pruned", "diverged", "failed", "cancelled")
MIN_KEPT = 2  # a fractional keep never shapes the next ranges from fewer trials


@dataclass(frozen=True)
class TrialOutcome:
    """What ranking needs of a trial: ``score`` is its validation accuracy (per ``select``)."""

    trial_id: int
    status: str
    score: float | None
    val_loss: float | None
    params: Mapping[str, Any] = field(default_factory=dict)


def rank(outcomes: Iterable[TrialOutcome]) -> list[TrialOutcome]:
    """Best first: scored ``done`` trials by score (ties: lower val_loss, then trial_id),
    then scored ``pruned`` ones likewise, then ``diverged``, ``failed``, ``cancelled``,
    then anything else (unscored pruned ones too), each by trial_id."""
    return sorted(outcomes, key=_rank_key)


def kept_for_refinement(ranked: Sequence[TrialOutcome], stage: StageConfig) -> list[TrialOutcome]:
    """The top ``stage.keep`` of the scored ``done`` trials of a ranked list (of the scored
    ``pruned`` ones only when no trial is done: they were behind when they stopped).

    A fraction keeps ``ceil(keep * n_done)`` but at least ``MIN_KEPT`` (one trial cannot
    span a range), a count keeps that many.
    """
    done = [t for t in ranked if is_scored(t)] or [t for t in ranked if is_scored_pruned(t)]
    if isinstance(stage.keep, float) and stage.keep < 1:
        n = max(MIN_KEPT, math.ceil(stage.keep * len(done) - 1e-9))  # 0.14 * 50 is 7.0000…01
    else:
        n = int(stage.keep)
    return done[:n]


def is_scored(outcome: TrialOutcome) -> bool:
    """A ``done`` trial with a finite score: the only kind that ranks by score."""
    return (_status(outcome) == "done" and outcome.score is not None
            and math.isfinite(outcome.score))


def is_scored_pruned(outcome: TrialOutcome) -> bool:
    """A ``pruned`` trial with a finite score (of the epochs it trained)."""
    return (_status(outcome) == "pruned" and outcome.score is not None
            and math.isfinite(outcome.score))


def _rank_key(t: TrialOutcome) -> tuple:
    if t.score is not None and (is_scored(t) or is_scored_pruned(t)):
        loss = t.val_loss if t.val_loss is not None and math.isfinite(t.val_loss) else math.inf
        return (int(not is_scored(t)), -float(t.score), loss, t.trial_id)
    status = _status(t)
    group = 2 + _LAST.index(status) if status in _LAST else 2 + len(_LAST)
    return (group, 0.0, 0.0, t.trial_id)


def _status(t: TrialOutcome) -> str:
    return str(getattr(t.status, "value", t.status))  # a TrialStatus enum or its string


def scored_trials(ranked: Sequence[TrialOutcome]) -> list[tuple[Mapping[str, Any], float | None]]:
    """(params, utility) of the scored and diverged trials of a ranked list, best first,
    for ``refine.boundary_flags``: utility is higher for better trials, equal for equal
    (score, val_loss), and None for a diverged one (worse than any scored trial); a scored
    ``pruned`` trial (stopped behind the stage's earlier trials) ranks below every done
    one; failed, cancelled and unfinished trials say nothing and are left out."""
    scored = [t for t in ranked if is_scored(t) or is_scored_pruned(t)]
    out: list[tuple[Mapping[str, Any], float | None]] = []
    for _, group in itertools.groupby(scored, key=lambda t: _rank_key(t)[:3]):
        tied = list(group)  # equal score and loss: the same utility (mid-rank)
        utility = float(len(scored) - len(out) - (len(tied) - 1) / 2)
        out += [(t.params, utility) for t in tied]
    out += [(t.params, None) for t in ranked if _status(t) == "diverged"]
    return out
