"""Trials: leased claims, fenced per-epoch writes, final statuses, reaping.

Every write of an attempt carries its lease token; a late or duplicate
execution (an orphaned process, a worker that was stopped past its lease)
matches no row and writes nothing. Lease expiry is judged by the database's
clock (``now_seconds``), never the worker's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from storage.db import now_seconds, upsert
from storage.models import (
    FINAL_TRIAL_STATUSES,
    Checkpoint,
    Curve,
    Param,
    Stage,
    StageKind,
    StageStatus,
    Sweep,
    SweepStatus,
    Trial,
    TrialStatus,
)
from storage.sweeps import param_value


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


@dataclass(frozen=True)
class TrialRow:
    id: int
    sweep_id: int
    stage_id: int
    stage_idx: int
    idx: int
    status: str
    seed: int
    epochs: int
    best_val_acc: float | None
    best_val_loss: float | None
    best_epoch: int | None
    attempts: int
    worker: str | None
    error: str | None
    parent_id: int | None
    params: dict[str, Any]


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch: the curve row plus what the trial's summary becomes."""

    epoch: int
    curve: dict[str, Any]
    best_val_acc: float | None
    best_val_loss: float | None
    best_epoch: int | None
    last_checkpoint: bytes
    best_checkpoint: bytes | None  # set when this epoch is the new best
    score: float | None
    snapshot_keep: int = 0  # keep this many 'snapshot' checkpoints (0 = none)


def trial_params(s: Session, trial_ids: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {t: {} for t in trial_ids}
    if not trial_ids:
        return out
    for p in s.scalars(select(Param).where(Param.trial_id.in_(trial_ids))):
        out[p.trial_id][p.name] = param_value(p.value, p.value_text)
    return out


def _live() -> ColumnElement[bool]:
    """SQL: the trial's work goes on: its sweep runs, or its stage is a running 'seeds'
    stage (the best configuration retrained for an ensemble, after the search ended)."""
    seeds = select(Stage.id).where(Stage.kind == StageKind.SEEDS.value,
                                   Stage.status == StageStatus.RUNNING.value)
    return or_(Sweep.status == SweepStatus.RUNNING.value, Trial.stage_id.in_(seeds))


def claim(s: Session, engine: Engine, trial_id: int, token: str, worker: str,
          lease_seconds: float) -> ClaimedTrial | None:
    """Take the trial for this attempt, or None if it is not ours to run.

    Claimable: ``queued``, or ``running`` with an expired lease, while its sweep
    (or its 'seeds' stage) runs and attempts remain. One conditional UPDATE: exactly
    one claimer wins.
    """
    now = now_seconds(engine)
    sweep_running = (select(Sweep.id).where(Sweep.id == Trial.sweep_id, _live(),
                                            Trial.attempts < Sweep.max_attempts).exists())
    res = s.execute(
        update(Trial)
        .where(Trial.id == trial_id, sweep_running,
               or_(Trial.status == TrialStatus.QUEUED.value,
                   and_(Trial.status == TrialStatus.RUNNING.value, Trial.lease_expires < now)))
        .values(status=TrialStatus.RUNNING.value, lease_token=token,
                lease_expires=now + lease_seconds, attempts=Trial.attempts + 1, worker=worker,
                started_at=func.coalesce(Trial.started_at, func.now()), error=None)
    )
    if res.rowcount != 1:
        return None
    t = s.get(Trial, trial_id)
    assert t is not None
    return ClaimedTrial(t.id, t.sweep_id, t.stage_id, t.seed, t.epochs, t.attempts, t.parent_id,
                        trial_params(s, [t.id])[t.id])


def trial_exists(s: Session, trial_id: int) -> bool:
    return s.get(Trial, trial_id) is not None


def trial_best(s: Session, trial_id: int) -> tuple[float | None, float | None, int | None]:
    """(best_val_acc, best_val_loss, best_epoch) recorded so far."""
    t = s.get(Trial, trial_id)
    return (t.best_val_acc, t.best_val_loss, t.best_epoch) if t else (None, None, None)


def _fence(s: Session, engine: Engine, trial_id: int, token: str, lease_seconds: float,
           **values: Any) -> None:
    res = s.execute(update(Trial).where(Trial.id == trial_id, Trial.lease_token == token,
                                        Trial.status == TrialStatus.RUNNING.value)
                    .values(lease_expires=now_seconds(engine) + lease_seconds, **values))
    if res.rowcount != 1:
        raise LeaseLost(f"trial {trial_id}: lease lost (taken over, cancelled or finished)")


def renew_lease(s: Session, engine: Engine, trial_id: int, token: str,
                lease_seconds: float) -> None:
    """Heartbeat: push the lease forward; raises LeaseLost if it is not ours."""
    _fence(s, engine, trial_id, token, lease_seconds)


def record_curve(s: Session, engine: Engine, trial_id: int, token: str, lease_seconds: float,
                 epoch: int, curve: dict[str, Any], **summary: Any) -> None:
    """One curve row (idempotent by (trial_id, epoch)), fenced by the lease."""
    _fence(s, engine, trial_id, token, lease_seconds, **summary)
    s.execute(upsert(engine, Curve.__table__, [{"trial_id": trial_id, "epoch": epoch, **curve}],
                     ["trial_id", "epoch"]))


def record_epoch(s: Session, engine: Engine, trial_id: int, token: str, lease_seconds: float,
                 rec: EpochRecord) -> None:
    """Curve row, checkpoints and summary of one epoch, fenced by the lease."""
    record_curve(s, engine, trial_id, token, lease_seconds, rec.epoch, rec.curve,
                 best_val_acc=rec.best_val_acc, best_val_loss=rec.best_val_loss,
                 best_epoch=rec.best_epoch)
    kinds = [("last", rec.last_checkpoint)]
    if rec.best_checkpoint is not None:
        kinds.append(("best", rec.best_checkpoint))
    if rec.snapshot_keep > 0:
        kinds.append(("snapshot", rec.last_checkpoint))
    for kind, data in kinds:
        if kind != "snapshot":
            s.execute(delete(Checkpoint).where(Checkpoint.trial_id == trial_id,
                                               Checkpoint.kind == kind))
        s.execute(upsert(engine, Checkpoint.__table__,
                         [{"trial_id": trial_id, "kind": kind, "epoch": rec.epoch,
                           "val_acc": rec.score, "data": data}], ["trial_id", "kind", "epoch"]))
    if rec.snapshot_keep > 0:
        s.execute(delete(Checkpoint).where(Checkpoint.trial_id == trial_id,
                                           Checkpoint.kind == "snapshot",
                                           Checkpoint.epoch <= rec.epoch - rec.snapshot_keep))


def finish(s: Session, engine: Engine, trial_id: int, token: str, status: str,
           error: str | None = None) -> None:
    """Final status for this attempt (fenced)."""
    _fence(s, engine, trial_id, token, 0.0, status=status, error=error, lease_token=None,
           finished_at=func.now())


def release(s: Session, engine: Engine, trial_id: int, token: str, error: str | None) -> None:
    """Give the trial back as queued (a transient failure or a graceful stop)."""
    _fence(s, engine, trial_id, token, 0.0, status=TrialStatus.QUEUED.value, error=error,
           lease_token=None)


def checkpoints(s: Session, trial_id: int) -> list[tuple[str, int, bytes]]:
    """(kind, epoch, data) of a trial's resumable checkpoints, newest epoch first."""
    rows = s.execute(select(Checkpoint.kind, Checkpoint.epoch, Checkpoint.data)
                     .where(Checkpoint.trial_id == trial_id,
                            Checkpoint.kind.in_(("last", "best")))
                     .order_by(Checkpoint.epoch.desc(), Checkpoint.kind.desc()))
    return [tuple(r) for r in rows]  # type: ignore[misc]


def checkpoint_data(s: Session, trial_id: int, kind: str = "best") -> list[tuple[int, bytes]]:
    """(epoch, data) of a trial's checkpoints of one kind, newest first."""
    rows = s.execute(select(Checkpoint.epoch, Checkpoint.data)
                     .where(Checkpoint.trial_id == trial_id, Checkpoint.kind == kind)
                     .order_by(Checkpoint.epoch.desc()))
    return [(e, d) for e, d in rows]


def curve_epochs(s: Session, trial_id: int) -> int:
    return s.scalar(select(func.count()).select_from(Curve).where(Curve.trial_id == trial_id)) or 0


def reap_expired(s: Session, engine: Engine) -> tuple[list[int], list[int]]:
    """Take back running trials whose lease expired: (requeued ids, failed ids).

    A trial that has used all its attempts ends ``failed`` so it never blocks
    its stage; the others go back to ``queued`` for a new attempt.
    """
    now = now_seconds(engine)
    expired = (select(Trial.id, Trial.attempts, Sweep.max_attempts, _live())
               .join(Sweep, Sweep.id == Trial.sweep_id)
               .where(Trial.status == TrialStatus.RUNNING.value, Trial.lease_expires < now))
    requeue, fail, cancel = [], [], []
    for tid, attempts, max_attempts, live in s.execute(expired):
        if not live:
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


def queued_trials(s: Session, sweep_id: int | None = None) -> list[tuple[int, str]]:
    """(trial id, queue name) of queued trials in running sweeps or 'seeds' stages."""
    q = (select(Trial.id, Sweep.queue).join(Sweep, Sweep.id == Trial.sweep_id)
         .where(Trial.status == TrialStatus.QUEUED.value,
                _live()))
    if sweep_id is not None:
        q = q.where(Sweep.id == sweep_id)
    return [(t, qn) for t, qn in s.execute(q.order_by(Trial.id))]


def trial_state(s: Session, trial_id: int) -> tuple[str, str] | None:
    """(trial status, sweep status), or None for an unknown trial; a trial of a running
    'seeds' stage reads its sweep as 'running' (its work goes on after the search)."""
    row = s.execute(select(Trial.status, Sweep.status, _live())
                    .join(Sweep, Sweep.id == Trial.sweep_id).where(Trial.id == trial_id)).first()
    if row is None:
        return None
    return (row[0], SweepStatus.RUNNING.value if row[2] else row[1])


def cancel_unfinished(s: Session, sweep_id: int) -> list[int]:
    """Mark every queued trial of a sweep cancelled; running ones stop at their next epoch."""
    ids = list(s.scalars(select(Trial.id).where(Trial.sweep_id == sweep_id,
                                                Trial.status == TrialStatus.QUEUED.value)))
    if ids:
        s.execute(update(Trial).where(Trial.id.in_(ids),
                                      Trial.status == TrialStatus.QUEUED.value)
                  .values(status=TrialStatus.CANCELLED.value, finished_at=func.now()))
    s.execute(update(Stage).where(Stage.sweep_id == sweep_id,
                                  Stage.status == StageStatus.RUNNING.value)
              .values(status=StageStatus.CANCELLED.value))
    return ids


def trials_of(s: Session, sweep_id: int, stage_id: int | None = None) -> list[TrialRow]:
    q = (select(Trial, Stage.idx).join(Stage, Stage.id == Trial.stage_id)
         .where(Trial.sweep_id == sweep_id))
    if stage_id is not None:
        q = q.where(Trial.stage_id == stage_id)
    rows = s.execute(q.order_by(Trial.id)).all()
    params = trial_params(s, [t.id for t, _ in rows])
    return [TrialRow(t.id, t.sweep_id, t.stage_id, idx, t.idx, t.status, t.seed, t.epochs,
                     t.best_val_acc, t.best_val_loss, t.best_epoch, t.attempts, t.worker, t.error,
                     t.parent_id, params[t.id]) for t, idx in rows]


def status_counts(s: Session, sweep_id: int) -> dict[int, dict[str, int]]:
    """stage id -> {status: count}."""
    out: dict[int, dict[str, int]] = {}
    rows = s.execute(select(Trial.stage_id, Trial.status, func.count())
                     .where(Trial.sweep_id == sweep_id).group_by(Trial.stage_id, Trial.status))
    for stage_id, status, n in rows:
        out.setdefault(stage_id, {})[status] = n
    return out


def is_final(status: str) -> bool:
    return status in FINAL_TRIAL_STATUSES


def copy_progress(s: Session, engine: Engine, parent_id: int, child_id: int) -> None:
    """Start a carried trial where its parent stopped: curves, checkpoints, summary."""
    curves = [{c.name: getattr(r, c.name) for c in Curve.__table__.columns}
              for r in s.scalars(select(Curve).where(Curve.trial_id == parent_id))]
    for row in curves:
        row["trial_id"] = child_id
    if curves:
        s.execute(upsert(engine, Curve.__table__, curves, ["trial_id", "epoch"]))
    for ck in s.scalars(select(Checkpoint).where(Checkpoint.trial_id == parent_id,
                                                 Checkpoint.kind.in_(("last", "best")))):
        s.add(Checkpoint(trial_id=child_id, kind=ck.kind, epoch=ck.epoch, val_acc=ck.val_acc,
                         data=ck.data))
    parent = s.get(Trial, parent_id)
    assert parent is not None
    s.execute(update(Trial).where(Trial.id == child_id).values(
        best_val_acc=parent.best_val_acc, best_val_loss=parent.best_val_loss,
        best_epoch=parent.best_epoch))
