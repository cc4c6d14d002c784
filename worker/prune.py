"""Stages that stop hopeless trials early: a stage's ``prune`` key, decided by index.

At the end of an epoch ``e`` at which its stage's rule checks (``median``: every epoch
from ``after`` on; ``halving``: the rungs ``after * eta**k``), a trial is compared with
the trials of *lower index* in its stage at that same epoch, never with whichever
trials happen to have got there first. Each earlier trial counts with its score of
epoch ``e`` (as ``select`` ranks epochs); one that was pruned or diverged before ``e``
counts as behind (it lost); one that failed or was cancelled before ``e`` says nothing.
The trial is stopped (status ``pruned``, curve and checkpoints kept) when more than
``1/k`` of those ``n`` trials are strictly better (``k`` = 2 for ``median``, ``eta``
for ``halving``), once ``n >= min_trials``. Trials with an index below ``min_trials``
are never stopped and never wait.

Determinism: the verdict is a function of curves that training writes the same
whatever the order trials run in (a trial's training depends only on its seed), so it
is made only once every earlier trial has a row at ``e`` or has ended. Until then the
worker waits (lease kept alive) while those trials are being trained, for at most
``MIN_WAIT`` seconds or ``WAIT_EPOCHS`` of its own epochs; if one is still queued (no
worker has it: waiting could deadlock), or the wait runs out, the trial is handed back
as ``queued`` at that epoch's checkpoint and decides when it is run again (the
reconciler re-enqueues it). The lowest-index unfinished trial never waits, so the
stage always progresses. Only a ``failed`` or ``cancelled`` earlier trial (a crash,
not a result) can make the verdict differ between runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from storage import attempts, transitions
from storage import pruning as store
from storage.attempts import LeaseLost
from storage.db import transact
from storage.models import StageKind, TrialStatus
from worker.defaults import SweepSettings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from worker.trainer import Claim, TrialContext

RULES = ("median", "halving")
KEYS = ("rule", "after", "min_trials", "eta")
MIN_WAIT = 30.0  # seconds an epoch's verdict may wait for earlier trials being trained
WAIT_EPOCHS = 3.0  # ... or this many of the trial's own epochs, if longer
POLL = (0.2, 2.0)  # first and longest pause between looks at the earlier trials

Score = tuple[float, float]  # (accuracy, -loss): higher is better
BEHIND = "behind"  # an earlier trial that lost before this epoch (pruned, diverged)
ABSENT = "absent"  # one that says nothing (failed or cancelled before this epoch)
PENDING = "pending"  # one that has not reached this epoch yet


@dataclass(frozen=True)
class PruneRule:
    """A stage's ``prune`` key (validated by the coordinator's config, ``problems``)."""

    rule: str = "median"
    after: int = 1  # the first epoch at whose end a trial may be stopped
    min_trials: int = 4  # earlier trials a verdict needs (and lower indices never stop)
    eta: int = 3  # halving: rungs at after * eta**k, each keeps the top 1/eta

    @property
    def k(self) -> int:
        """Stopped when more than ``1/k`` of the earlier trials are better."""
        return 2 if self.rule == "median" else self.eta

    def checks_at(self, epoch: int, epochs: int) -> bool:
        """Whether a trial of ``epochs`` epochs is judged at the end of ``epoch``."""
        if not self.after <= epoch < epochs:
            return False
        if self.rule == "median":
            return True
        rung = self.after
        while rung < epoch:
            rung *= self.eta
        return rung == epoch

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PruneRule | None:
        return None if not d else cls(**{k: d[k] for k in KEYS if d.get(k) is not None})


def problems(d: Any, epochs: int | None,
             show: Callable[[Any], str] = repr) -> list[tuple[str, str]]:
    """(sub-key, what is wrong) for a stage's ``prune`` value (in a stage of ``epochs``;
    None: unknown), empty when it is valid; ``show`` renders a bad value."""
    if not isinstance(d, Mapping):
        return [("", f"expected a mapping like {{rule: median, after: 1}}, got {show(d)}")]
    out = [(str(k), f"unknown key; expected one of {', '.join(KEYS)}") for k in d
           if k not in KEYS]
    if d.get("rule", "median") not in RULES:
        out.append(("rule", f"unknown rule {show(d.get('rule'))}; expected one of "
                            f"{', '.join(RULES)}"))
    for key, low in (("after", 1), ("min_trials", 1), ("eta", 2)):
        v = d.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            out.append((key, f"expected an integer >= {low}, got {show(v)}"))
    after = d.get("after", 1)
    if (epochs is not None and isinstance(after, int) and not isinstance(after, bool)
            and after >= epochs):
        out.append(("after", f"must be below the stage's epochs ({epochs}): a trial is "
                             f"judged at the end of an epoch before its last, got {after}"))
    return out


def rule_of(config: Mapping[str, Any], stage_idx: int) -> PruneRule | None:
    stages = config.get("stages") or []
    return PruneRule.from_dict(stages[stage_idx].get("prune")) \
        if stage_idx < len(stages) else None


def score_at(peer: store.PeerAt, select: str) -> Score | None:
    """The epoch's score as ``select`` ranks epochs (as the trainer's ``score_of``)."""
    if peer.val_acc is None or not math.isfinite(peer.val_acc):
        return None
    loss = peer.val_loss if peer.val_loss is not None else math.inf
    raw = (peer.val_acc, -loss)
    if peer.ema_val_acc is None or select == "raw":
        return raw
    ema = (peer.ema_val_acc, -(peer.ema_val_loss if peer.ema_val_loss is not None else loss))
    return ema if select == "ema" else max(ema, raw)


def standing(peer: store.PeerAt, select: str) -> Score | str:
    """An earlier trial as the verdict counts it at one epoch."""
    if peer.has_row:
        return score_at(peer, select) or BEHIND  # no metrics: that epoch diverged
    if peer.status in (TrialStatus.PRUNED.value, TrialStatus.DIVERGED.value):
        return BEHIND
    if peer.status in (TrialStatus.QUEUED.value, TrialStatus.RUNNING.value):
        return PENDING
    return ABSENT


@dataclass(frozen=True)
class Verdict:
    ready: bool  # every earlier trial has reached the epoch or ended
    prune: bool = False
    better: int = 0  # earlier trials strictly better at the epoch
    n: int = 0  # earlier trials counted
    waiting_on: tuple[store.PeerAt, ...] = ()


def verdict(rule: PruneRule, own: store.PeerAt, earlier: Sequence[store.PeerAt],
            select: str) -> Verdict:
    """Pure: stop ``own`` at this epoch? (see the module's doc)"""
    mine = score_at(own, select)
    counted: list[Score | str] = []
    waiting = []
    for peer in earlier:
        st = standing(peer, select)
        if st == PENDING:
            waiting.append(peer)
        elif st != ABSENT:
            counted.append(st)
    if waiting:
        return Verdict(False, waiting_on=tuple(waiting))
    if mine is None:
        return Verdict(True)
    better = sum(1 for v in counted if not isinstance(v, str) and v > mine)
    n = len(counted)
    return Verdict(True, n >= rule.min_trials and rule.k * better > n, better, n)


class Stop(NamedTuple):
    status: str  # 'pruned', or 'released' (handed back to decide later)
    ready: bool | None  # whether the stage's advancement became due (None: not checked)


class PruneGate:
    """The epoch loop's hook: ``check(epoch)`` before training the epoch after it."""

    def __init__(self, ctx: TrialContext, claim: Claim, token: str, lost: threading.Event,
                 rule: PruneRule, place: store.Place) -> None:
        self.ctx, self.trial, self.token, self.lost = ctx, claim.trial, token, lost
        self.rule, self.place = rule, place
        self.select = SweepSettings.of(claim.sweep.config).select

    @classmethod
    def of(cls, ctx: TrialContext, claim: Claim, token: str,
           lost: threading.Event) -> PruneGate | None:
        """The gate of a trial whose stage prunes, else None (no query unless the sweep has
        a stage that prunes)."""
        if not any(st.get("prune") for st in claim.sweep.config.get("stages") or []):
            return None
        place = transact(ctx.engine, lambda s: store.place_of(s, claim.trial.id))
        if place is None or place.stage_kind != StageKind.SEARCH.value:
            return None
        rule = rule_of(claim.sweep.config, place.stage_idx)
        return None if rule is None else cls(ctx, claim, token, lost, rule, place)

    def check(self, epoch: int) -> Stop | None:
        """None: train on. Else the trial was stopped here (pruned, or handed back)."""
        if self.place.idx < self.rule.min_trials or not self.rule.checks_at(
                epoch, self.trial.epochs):
            return None
        deadline, pause = None, POLL[0]
        while True:
            peers = transact(self.ctx.engine, lambda s: store.stage_at_epoch(
                s, self.place.stage_id, self.place.idx, epoch))
            own = peers[-1] if peers and peers[-1].idx == self.place.idx else None
            if own is None or not own.has_row:
                return None  # nothing of its own to judge (cannot happen after an epoch)
            v = verdict(self.rule, own, peers[:-1], self.select)
            if v.ready:
                return self._prune(epoch, own, v) if v.prune else None
            deadline = deadline or time.monotonic() + max(MIN_WAIT,
                                                          WAIT_EPOCHS * (own.seconds or 0.0))
            queued = [p.idx for p in v.waiting_on if p.status == TrialStatus.QUEUED.value]
            if queued or time.monotonic() >= deadline:
                return self._hand_back(
                    f"waiting for the trial(s) of index {_ids(v.waiting_on)} of stage "
                    f"{self.place.stage_idx} "
                    f"to reach epoch {epoch} (pruning decides by index); resumes from epoch "
                    f"{epoch}'s checkpoint")
            if self.lost.wait(pause):
                raise LeaseLost(f"trial {self.trial.id}: lease lost")
            if self.ctx.stop_requested():
                return self._hand_back("worker stopped; resumable")
            pause = min(POLL[1], pause * 1.5)

    def _prune(self, epoch: int, own: store.PeerAt, v: Verdict) -> Stop:
        score = score_at(own, self.select)
        assert score is not None
        why = (f"pruned after epoch {epoch}: val_acc {score[0]:.4f} behind {v.better} of the "
               f"{v.n} earlier trials of stage {self.place.stage_idx} at that epoch (rule "
               f"{self.rule.rule}: stop when more than 1/{self.rule.k} are better)")

        def work(s: Session) -> bool:
            attempts.finish(s, self.ctx.engine, self.trial.id, self.token,
                               TrialStatus.PRUNED.value, why)
            return transitions.settle_stage(s, self.trial.stage_id)

        return Stop(TrialStatus.PRUNED.value, transact(self.ctx.engine, work, core=True))

    def _hand_back(self, why: str) -> Stop:
        transact(self.ctx.engine, lambda s: attempts.hand_back(
            s, self.ctx.engine, self.trial.id, self.token, why))
        return Stop("released", None)


def _ids(peers: Sequence[store.PeerAt]) -> str:
    idx = [str(p.idx) for p in peers]
    return ", ".join(idx[:5]) + (f" and {len(idx) - 5} more" if len(idx) > 5 else "")
