"""An attempt's lifecycle: leased claim, fenced per-epoch writes, final status or
release, and reaping of attempts whose lease expired.

Every write of an attempt carries its lease token; a late or duplicate
execution (an orphaned process, a worker that was stopped past its lease)
matches no row and writes nothing. Lease expiry is judged by the database's
clock (``now_seconds``), never the worker's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Float, Update, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from storage import checkpoints
from storage.db import cached_statement, now_seconds, upsert, upsert_statement
from storage.models import Checkpoint, Curve, Sweep, Trial, TrialStatus
from storage.trials import live, trial_params

# Core tables: the hot paths below run prebuilt Core statements, not ORM ones (an ORM
# UPDATE or SELECT costs ~0.25 ms of Python each; a prebuilt Core one ~0.02 ms)
_TRIALS = Trial.__table__
_SWEEPS = Sweep.__table__
_CURVES = Curve.__table__


class LeaseLost(RuntimeError):
    """This attempt no longer owns the trial: stop without writing anything."""


@dataclass(frozen=True)
class ClaimedTrial:
    id: int
    sweep_id: int
    stage_id: int
    seed: int
    epochs: int
    attempts: int
    parent_id: int | None
    params: dict[str, Any]
    best_val_acc: float | None = None  # recorded by earlier attempts (or the parent)
    best_val_loss: float | None = None
    best_epoch: int | None = None


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch: the curve row plus what the trial's summary becomes."""

    epoch: int
    curve: dict[str, Any]
    best_val_acc: float | None
    best_val_loss: float | None
    best_epoch: int | None
    last_checkpoint: bytes
    score: float | None
    keep_snapshots: int = 0  # keep this many 'snapshot' checkpoints (0 = none)
    # this epoch is the new best and ``last_checkpoint`` holds it: the 'best' row is
    # written later, from the 'last' row (see ``storage.checkpoints``), not a second copy now
    best_in_last: bool = False
    # the previous epoch's ``best_in_last`` in this attempt (None: unknown, e.g. the first
    # epoch after a resume): when it is the same, the rows are already in shape
    previous_in_last: bool | None = None


def claim(s: Session, engine: Engine, trial_id: int, token: str, worker: str,
          lease_seconds: float) -> ClaimedTrial | None:
    """Take the trial for this attempt, or None if it is not ours to run.

    Claimable: ``queued``, or ``running`` with an expired lease, while its sweep
    (or its 'seeds' stage) runs and attempts remain. One conditional UPDATE: exactly
    one claimer wins, and it reads the claimed row back in the same statement.
    """
    row = s.execute(cached_statement(engine, "claim", lambda: _claim_statement(engine)),
                    {"p_id": trial_id, "p_token": token, "p_worker": worker,
                     "p_lease": float(lease_seconds)}).first()
    if row is None:
        return None
    return ClaimedTrial(row.id, row.sweep_id, row.stage_id, row.seed, row.epochs, row.attempts,
                        row.parent_id, trial_params(s, [row.id])[row.id], row.best_val_acc,
                        row.best_val_loss, row.best_epoch)


def _claim_statement(engine: Engine) -> Update:
    t, now = _TRIALS.c, now_seconds(engine)
    runnable = (select(_SWEEPS.c.id).where(_SWEEPS.c.id == t.sweep_id, live(),
                                           t.attempts < _SWEEPS.c.max_attempts).exists())
    return (update(_TRIALS)
            .where(t.id == bindparam("p_id"), runnable,
                   or_(t.status == TrialStatus.QUEUED.value,
                       and_(t.status == TrialStatus.RUNNING.value, t.lease_expires < now)))
            .values(status=TrialStatus.RUNNING.value, lease_token=bindparam("p_token"),
                    lease_expires=now + bindparam("p_lease", type_=Float),
                    attempts=t.attempts + 1, worker=bindparam("p_worker"),
                    started_at=func.coalesce(t.started_at, func.now()), error=None)
            .returning(t.id, t.sweep_id, t.stage_id, t.seed, t.epochs, t.attempts, t.parent_id,
                       t.best_val_acc, t.best_val_loss, t.best_epoch))


def _fence(s: Session, engine: Engine, trial_id: int, token: str, lease_seconds: float,
           *, finished: bool = False, **values: Any) -> bool:
    """UPDATE the trial's ``values`` (and lease; ``finished_at`` when ``finished``) only
    while this attempt's token holds it; raises ``LeaseLost`` otherwise. Returns whether
    the trial's work goes on (``live``: its sweep runs), read by the same statement."""
    keys = tuple(sorted(values))

    def build() -> Update:
        t = _TRIALS.c
        extra = {"finished_at": func.now()} if finished else {}
        goes_on = (select(live()).where(_SWEEPS.c.id == t.sweep_id).correlate(_TRIALS)
                   .scalar_subquery())
        return (update(_TRIALS)
                .where(t.id == bindparam("p_id"), t.lease_token == bindparam("p_token"),
                       t.status == TrialStatus.RUNNING.value)
                .values(lease_expires=now_seconds(engine) + bindparam("p_lease", type_=Float),
                        **{k: bindparam(f"v_{k}") for k in keys}, **extra)
                .returning(goes_on))

    stmt = cached_statement(engine, ("fence", keys, finished), build)
    row = s.execute(stmt, {"p_id": trial_id, "p_token": token, "p_lease": float(lease_seconds),
                           **{f"v_{k}": v for k, v in values.items()}}).first()
    if row is None:
        raise LeaseLost(f"trial {trial_id}: lease lost (taken over, cancelled or finished)")
    return bool(row[0])


def renew_lease(s: Session, engine: Engine, trial_id: int, token: str,
                lease_seconds: float) -> None:
    """Push the lease forward; raises LeaseLost if it is not ours."""
    _fence(s, engine, trial_id, token, lease_seconds)


def record_curve(s: Session, engine: Engine, trial_id: int, token: str, lease_seconds: float,
                 epoch: int, curve: dict[str, Any], **summary: Any) -> bool:
    """One curve row (idempotent by (trial_id, epoch)), fenced by the lease; returns
    whether the trial's work goes on (False: its sweep was cancelled meanwhile)."""
    goes_on = _fence(s, engine, trial_id, token, lease_seconds, **summary)
    row = {"trial_id": trial_id, "epoch": epoch, **curve}
    s.execute(upsert_statement(engine, _CURVES, ("trial_id", "epoch"), tuple(row)), row)
    return goes_on


def record_epoch(s: Session, engine: Engine, trial_id: int, token: str, lease_seconds: float,
                 rec: EpochRecord) -> bool:
    """Curve row, checkpoints and summary of one epoch, fenced by the lease; returns
    whether the trial's work goes on (False: its sweep was cancelled meanwhile).

    A finished trial has both a 'last' and a 'best' checkpoint row; a running one may
    have only 'last' while its newest epoch is its best (``storage.checkpoints``).
    """
    goes_on = record_curve(s, engine, trial_id, token, lease_seconds, rec.epoch, rec.curve,
                           best_val_acc=rec.best_val_acc, best_val_loss=rec.best_val_loss,
                           best_epoch=rec.best_epoch)
    checkpoints.write_epoch(s, engine, trial_id, rec.epoch, rec.score, rec.last_checkpoint,
                            best_epoch=rec.best_epoch, best_in_last=rec.best_in_last,
                            previous_in_last=rec.previous_in_last,
                            keep_snapshots=rec.keep_snapshots)
    return goes_on


def finish(s: Session, engine: Engine, trial_id: int, token: str, status: str,
           error: str | None = None) -> None:
    """Final status for this attempt (fenced), and its 'best' checkpoint row if its best
    epoch is its last one (see ``record_epoch``)."""
    _fence(s, engine, trial_id, token, 0.0, finished=True, status=status, error=error,
           lease_token=None)
    checkpoints.materialize_best(s, engine, trial_id)


def release(s: Session, engine: Engine, trial_id: int, token: str, error: str | None) -> None:
    """Give the trial back as queued after a failed attempt (it counts: the trial fails
    for good once its attempts run out)."""
    _fence(s, engine, trial_id, token, 0.0, status=TrialStatus.QUEUED.value, error=error,
           lease_token=None)


def hand_back(s: Session, engine: Engine, trial_id: int, token: str, why: str) -> None:
    """Give a running trial back as ``queued`` without using up an attempt (fenced by its
    lease like ``release``): the worker stopping, a model it cannot train, a pruning
    verdict that must wait. None of these is the trial's failure; counting them would let
    a worker that keeps being stopped (or a fleet that keeps handing a trial round) exhaust
    a trial that never failed."""
    def build() -> Update:
        t = _TRIALS.c
        return (update(_TRIALS)
                .where(t.id == bindparam("p_id"), t.lease_token == bindparam("p_token"),
                       t.status == TrialStatus.RUNNING.value)
                .values(status=TrialStatus.QUEUED.value, lease_token=None,
                        error=bindparam("p_why"), attempts=t.attempts - 1))

    res = s.execute(cached_statement(engine, "hand-back", build),
                    {"p_id": trial_id, "p_token": token, "p_why": why})
    if res.rowcount != 1:
        raise LeaseLost(f"trial {trial_id}: lease lost (taken over, cancelled or finished)")


def reap_expired(s: Session, engine: Engine) -> tuple[list[int], list[int]]:
    """Take back running trials whose lease expired: (requeued ids, failed ids).

    A trial that has used all its attempts ends ``failed`` so it never blocks
    its stage; the others go back to ``queued`` for a new attempt.
    """
    now = now_seconds(engine)
    expired = (select(Trial.id, Trial.attempts, Sweep.max_attempts, live())
               .join(Sweep, Sweep.id == Trial.sweep_id)
               .where(Trial.status == TrialStatus.RUNNING.value, Trial.lease_expires < now))
    requeue, fail, cancel = [], [], []
    for tid, attempts, max_attempts, goes_on in s.execute(expired):
        if not goes_on:
            cancel.append(tid)
        else:
            (fail if attempts >= max_attempts else requeue).append(tid)
    stale = and_(Trial.status == TrialStatus.RUNNING.value, Trial.lease_expires < now)
    outcomes = (
        (requeue, TrialStatus.QUEUED, "lease expired (worker lost); retrying"),
        (fail, TrialStatus.FAILED, "attempts exhausted: the worker was lost on every attempt"),
        (cancel, TrialStatus.CANCELLED, "sweep cancelled"),
    )
    for ids, status, error in outcomes:
        if ids:
            final = {"finished_at": func.now()} if status != TrialStatus.QUEUED else {}
            s.execute(update(Trial).where(Trial.id.in_(ids), stale)
                      .values(status=status.value, lease_token=None, error=error, **final))
    return requeue, fail


def copy_progress(s: Session, engine: Engine, parent_id: int, child_id: int) -> None:
    """Start a carried trial where its parent stopped: curves, checkpoints, summary."""
    curves = [{c.name: getattr(r, c.name) for c in _CURVES.columns}
              for r in s.scalars(select(Curve).where(Curve.trial_id == parent_id))]
    for row in curves:
        row["trial_id"] = child_id
    if curves:
        s.execute(upsert(engine, _CURVES, curves, ["trial_id", "epoch"]))
    for ck in s.scalars(select(Checkpoint).where(Checkpoint.trial_id == parent_id,
                                                 Checkpoint.kind.in_(checkpoints.RESUMABLE))):
        s.add(Checkpoint(trial_id=child_id, kind=ck.kind, epoch=ck.epoch, val_acc=ck.val_acc,
                         data=ck.data))
    parent = s.get(Trial, parent_id)
    assert parent is not None
    s.execute(update(Trial).where(Trial.id == child_id).values(
        best_val_acc=parent.best_val_acc, best_val_loss=parent.best_val_loss,
        best_epoch=parent.best_epoch))
