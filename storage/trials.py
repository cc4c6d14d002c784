"""Trials: leased claims, fenced per-epoch writes, final statuses, reaping.

Every write of an attempt carries its lease token; a late or duplicate
execution (an orphaned process, a worker that was stopped past its lease)
matches no row and writes nothing. Lease expiry is judged by the database's
clock (``now_seconds``), never the worker's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Float,
    Integer,
    LargeBinary,
    String,
    and_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from storage.db import bind_of, cached_statement, now_seconds, upsert, upsert_statement
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

# Core tables: the hot paths below run prebuilt Core statements, not ORM ones (an ORM
# UPDATE or SELECT costs ~0.25 ms of Python each; a prebuilt Core one ~0.02 ms)
_TRIALS = Trial.__table__
_SWEEPS = Sweep.__table__
_STAGES = Stage.__table__
_PARAMS = Param.__table__
_CURVES = Curve.__table__
_CHECKPOINTS = Checkpoint.__table__
_RESUMABLE = ("last", "best")


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
    best_checkpoint: bytes | None  # set when this epoch is the new best (written now)
    score: float | None
    keep_snapshots: int = 0  # keep this many 'snapshot' checkpoints (0 = none)
    # this epoch is the new best and ``last_checkpoint`` holds it: the 'best' row is
    # written later, from the 'last' row (see ``record_epoch``), not a second copy now
    best_in_last: bool = False
    # the previous epoch's ``best_in_last`` in this attempt (None: unknown, e.g. the first
    # epoch after a resume): when it is the same, the rows are already in shape
    previous_in_last: bool | None = None


def trial_params(s: Session, trial_ids: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {t: {} for t in trial_ids}
    if not trial_ids:
        return out
    stmt = (select(_PARAMS.c.trial_id, _PARAMS.c.name, _PARAMS.c.value, _PARAMS.c.value_text)
            .where(_PARAMS.c.trial_id.in_(bindparam("ids", expanding=True))))
    for trial_id, name, value, value_text in s.execute(stmt, {"ids": list(trial_ids)}):
        out[trial_id][name] = param_value(value, value_text)
    return out


def _live() -> ColumnElement[bool]:
    """SQL: the trial's work goes on: its sweep runs, or its stage is a running 'seeds'
    stage (the best configuration retrained for an ensemble, after the search ended)."""
    seeds = select(_STAGES.c.id).where(_STAGES.c.kind == StageKind.SEEDS.value,
                                       _STAGES.c.status == StageStatus.RUNNING.value)
    return or_(_SWEEPS.c.status == SweepStatus.RUNNING.value, _TRIALS.c.stage_id.in_(seeds))


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


def _claim_statement(engine: Engine):  # type: ignore[no-untyped-def]
    t, now = _TRIALS.c, now_seconds(engine)
    runnable = (select(_SWEEPS.c.id).where(_SWEEPS.c.id == t.sweep_id, _live(),
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


def trial_exists(s: Session, trial_id: int) -> bool:
    return s.get(Trial, trial_id) is not None


def trial_best(s: Session, trial_id: int) -> tuple[float | None, float | None, int | None]:
    """(best_val_acc, best_val_loss, best_epoch) recorded so far."""
    t = s.get(Trial, trial_id)
    return (t.best_val_acc, t.best_val_loss, t.best_epoch) if t else (None, None, None)


def _fence(s: Session, engine: Engine, trial_id: int, token: str, lease_seconds: float,
           *, finished: bool = False, **values: Any) -> bool:
    """UPDATE the trial's ``values`` (and lease; ``finished_at`` when ``finished``) only
    while this attempt's token holds it; raises ``LeaseLost`` otherwise. Returns whether
    the trial's work goes on (``_live``: its sweep runs), read by the same statement."""
    keys = tuple(sorted(values))

    def build():  # type: ignore[no-untyped-def]
        t = _TRIALS.c
        extra = {"finished_at": func.now()} if finished else {}
        live = (select(_live()).where(_SWEEPS.c.id == t.sweep_id).correlate(_TRIALS)
                .scalar_subquery())
        return (update(_TRIALS)
                .where(t.id == bindparam("p_id"), t.lease_token == bindparam("p_token"),
                       t.status == TrialStatus.RUNNING.value)
                .values(lease_expires=now_seconds(engine) + bindparam("p_lease", type_=Float),
                        **{k: bindparam(f"v_{k}") for k in keys}, **extra)
                .returning(live))

    stmt = cached_statement(engine, ("fence", keys, finished), build)
    row = s.execute(stmt, {"p_id": trial_id, "p_token": token, "p_lease": float(lease_seconds),
                           **{f"v_{k}": v for k, v in values.items()}}).first()
    if row is None:
        raise LeaseLost(f"trial {trial_id}: lease lost (taken over, cancelled or finished)")
    return bool(row[0])


def renew_lease(s: Session, engine: Engine, trial_id: int, token: str,
                lease_seconds: float) -> None:
    """Heartbeat: push the lease forward; raises LeaseLost if it is not ours."""
    _fence(s, engine, trial_id, token, lease_seconds)


def record_curve(s: Session, engine: Engine, trial_id: int, token: str, lease_seconds: float,
                 epoch: int, curve: dict[str, Any], **summary: Any) -> bool:
    """One curve row (idempotent by (trial_id, epoch)), fenced by the lease; returns
    whether the trial's work goes on (False: its sweep was cancelled meanwhile)."""
    live = _fence(s, engine, trial_id, token, lease_seconds, **summary)
    row = {"trial_id": trial_id, "epoch": epoch, **curve}
    s.execute(upsert_statement(engine, _CURVES, ("trial_id", "epoch"), tuple(row)), row)
    return live


def record_epoch(s: Session, engine: Engine, trial_id: int, token: str, lease_seconds: float,
                 rec: EpochRecord) -> bool:
    """Curve row, checkpoints and summary of one epoch, fenced by the lease; returns
    whether the trial's work goes on (False: its sweep was cancelled meanwhile).

    With ``rec.best_in_last`` an improving epoch writes its checkpoint once: its 'last'
    row stands for 'best' too (and an older 'best' row goes), until a later epoch
    replaces 'last' (the row is then renamed 'best', no bytes copied) or the trial
    finishes (``finish`` copies it to 'best'). A finished trial has both rows, as ever;
    a running one may have only 'last' while its newest epoch is its best.
    """
    live = record_curve(s, engine, trial_id, token, lease_seconds, rec.epoch, rec.curve,
                        best_val_acc=rec.best_val_acc, best_val_loss=rec.best_val_loss,
                        best_epoch=rec.best_epoch)
    if rec.best_in_last and rec.previous_in_last is not True:
        s.execute(cached_statement(engine, "checkpoint-drop", lambda: delete(_CHECKPOINTS).where(
            _CHECKPOINTS.c.trial_id == bindparam("p_trial"), _CHECKPOINTS.c.kind == "best")),
            {"p_trial": trial_id})
    elif (not rec.best_in_last and rec.best_checkpoint is None and rec.best_epoch is not None
          and rec.previous_in_last is not False):
        s.execute(cached_statement(engine, "checkpoint-keep-best", _keep_best_statement),
                  {"p_trial": trial_id, "p_epoch": rec.best_epoch})
    _replace_checkpoint(s, engine, trial_id, "last", rec.epoch, rec.score, rec.last_checkpoint)
    if rec.best_checkpoint is not None:
        # the new best is usually this epoch's 'last': copy it inside the database
        # instead of sending the same bytes twice
        same = rec.best_checkpoint is rec.last_checkpoint or \
            rec.best_checkpoint == rec.last_checkpoint
        _replace_checkpoint(s, engine, trial_id, "best", rec.epoch, rec.score,
                            None if same else rec.best_checkpoint)
    if rec.keep_snapshots > 0:
        row = {"trial_id": trial_id, "kind": "snapshot", "epoch": rec.epoch,
               "val_acc": rec.score, "data": rec.last_checkpoint}
        s.execute(upsert_statement(engine, _CHECKPOINTS, ("trial_id", "kind", "epoch"),
                                   tuple(row)), row)
        s.execute(delete(Checkpoint).where(Checkpoint.trial_id == trial_id,
                                           Checkpoint.kind == "snapshot",
                                           Checkpoint.epoch <= rec.epoch - rec.keep_snapshots))
    return live


def _replace_checkpoint(s: Session, engine: Engine, trial_id: int, kind: str, epoch: int,
                        val_acc: float | None, data: bytes | None) -> None:
    """The trial's one checkpoint of ``kind`` becomes ``data`` at ``epoch`` (``data`` None:
    a copy of its 'last' checkpoint of that epoch, written just before): the row is
    updated in place (one statement), or inserted the first time."""
    args = {"p_trial": trial_id, "p_kind": kind, "p_epoch": epoch, "p_acc": val_acc}
    if data is not None:
        args["p_data"] = data
    key = "checkpoint-copy" if data is None else "checkpoint-write"
    res = s.execute(cached_statement(engine, ("update", key),
                                     lambda: _checkpoint_update(data is None)), args)
    if res.rowcount == 0:
        s.execute(cached_statement(engine, ("insert", key),
                                   lambda: _checkpoint_insert(data is None)), args)


def _keep_best_statement():  # type: ignore[no-untyped-def]
    """Rename the 'last' row to 'best' when it holds the best epoch and no 'best' row
    exists (the deferred best of ``record_epoch``), before 'last' is replaced."""
    c, other = _CHECKPOINTS.c, _CHECKPOINTS.alias("best_checkpoint")
    has_best = select(other.c.epoch).where(other.c.trial_id == bindparam("p_trial"),
                                           other.c.kind == "best").exists()
    return (update(_CHECKPOINTS)
            .where(c.trial_id == bindparam("p_trial"), c.kind == "last",
                   c.epoch == bindparam("p_epoch"), ~has_best)
            .values(kind="best"))


def _materialize_best_statement():  # type: ignore[no-untyped-def]
    """Copy the 'last' row to 'best' when it holds the trial's best epoch and no 'best'
    row exists (a finished trial always has both)."""
    c, other, t = _CHECKPOINTS.c, _CHECKPOINTS.alias("best_checkpoint"), _TRIALS.c
    has_best = select(other.c.epoch).where(other.c.trial_id == bindparam("p_trial"),
                                           other.c.kind == "best").exists()
    best_epoch = select(t.best_epoch).where(t.id == bindparam("p_trial")).scalar_subquery()
    return insert(_CHECKPOINTS).from_select(
        ["trial_id", "kind", "epoch", "val_acc", "data"],
        select(c.trial_id, literal_column("'best'"), c.epoch, c.val_acc, c.data)
        .where(c.trial_id == bindparam("p_trial"), c.kind == "last", c.epoch == best_epoch,
               ~has_best))


def _checkpoint_source(copy: bool):  # type: ignore[no-untyped-def]
    """The bytes to store: the bound ``p_data``, or the trial's 'last' checkpoint of
    ``p_epoch`` (an aliased scalar subquery, so it never correlates with the row written)."""
    if not copy:
        return bindparam("p_data", type_=LargeBinary)
    last = _CHECKPOINTS.alias("last_checkpoint")
    return (select(last.c.data).where(last.c.trial_id == bindparam("p_trial"),
                                      last.c.kind == "last",
                                      last.c.epoch == bindparam("p_epoch"))
            .scalar_subquery())


def _checkpoint_update(copy: bool):  # type: ignore[no-untyped-def]
    c = _CHECKPOINTS.c
    return (update(_CHECKPOINTS)
            .where(c.trial_id == bindparam("p_trial"), c.kind == bindparam("p_kind"))
            .values(epoch=bindparam("p_epoch"), val_acc=bindparam("p_acc", type_=Float),
                    data=_checkpoint_source(copy)))


def _checkpoint_insert(copy: bool):  # type: ignore[no-untyped-def]
    return insert(_CHECKPOINTS).from_select(
        ["trial_id", "kind", "epoch", "val_acc", "data"],
        select(bindparam("p_trial", type_=Integer), cast(bindparam("p_kind"), String(16)),
               bindparam("p_epoch", type_=Integer), bindparam("p_acc", type_=Float),
               _checkpoint_source(copy)))


def finish(s: Session, engine: Engine, trial_id: int, token: str, status: str,
           error: str | None = None) -> None:
    """Final status for this attempt (fenced), and its 'best' checkpoint row if its best
    epoch is its last one (see ``record_epoch``)."""
    _fence(s, engine, trial_id, token, 0.0, finished=True, status=status, error=error,
           lease_token=None)
    s.execute(cached_statement(engine, "checkpoint-materialize-best",
                               _materialize_best_statement), {"p_trial": trial_id})


def release(s: Session, engine: Engine, trial_id: int, token: str, error: str | None) -> None:
    """Give the trial back as queued (a transient failure or a graceful stop)."""
    _fence(s, engine, trial_id, token, 0.0, status=TrialStatus.QUEUED.value, error=error,
           lease_token=None)


def checkpoints(s: Session, trial_id: int) -> list[tuple[str, int, bytes]]:
    """(kind, epoch, data) of a trial's resumable checkpoints, newest epoch first."""
    c = _CHECKPOINTS.c
    stmt = cached_statement(bind_of(s), "checkpoints", lambda: select(c.kind, c.epoch, c.data)
                            .where(c.trial_id == bindparam("p_trial"), c.kind.in_(_RESUMABLE))
                            .order_by(c.epoch.desc(), c.kind.desc()))
    rows = s.execute(stmt, {"p_trial": trial_id})
    return [tuple(r) for r in rows]  # type: ignore[misc]


def checkpoint_data(s: Session, trial_id: int, kind: str = "best") -> list[tuple[int, bytes]]:
    """(epoch, data) of a trial's checkpoints of one kind, newest first."""
    rows = s.execute(select(Checkpoint.epoch, Checkpoint.data)
                     .where(Checkpoint.trial_id == trial_id, Checkpoint.kind == kind)
                     .order_by(Checkpoint.epoch.desc()))
    return [(e, d) for e, d in rows]


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


def queued_trials(s: Session, sweep_id: int | None = None,
                  window: int | None = None) -> list[tuple[int, str]]:
    """(trial id, queue name) of queued trials in running sweeps or 'seeds' stages;
    with ``window``, only the first ``window`` of each sweep by id."""
    q = (select(Trial.id, Sweep.queue, Trial.sweep_id).join(Sweep, Sweep.id == Trial.sweep_id)
         .where(Trial.status == TrialStatus.QUEUED.value, _live()))
    if sweep_id is not None:
        q = q.where(Sweep.id == sweep_id)
    if window is not None:
        rank = func.row_number().over(partition_by=Trial.sweep_id, order_by=Trial.id)
        ranked = q.add_columns(rank.label("n")).subquery()
        q = select(ranked.c.id, ranked.c.queue).where(ranked.c.n <= window)
        return [(t, qn) for t, qn in s.execute(q.order_by(ranked.c.id))]
    return [(t, qn) for t, qn, _ in s.execute(q.order_by(Trial.id))]


def trial_state(s: Session, trial_id: int) -> tuple[str, str] | None:
    """(trial status, sweep status), or None for an unknown trial; a trial of a running
    'seeds' stage reads its sweep as 'running' (its work goes on after the search)."""
    t = _TRIALS.c
    stmt = cached_statement(bind_of(s), "trial-state", lambda: select(
        t.status, _SWEEPS.c.status, _live()).join_from(
        _TRIALS, _SWEEPS, _SWEEPS.c.id == t.sweep_id).where(t.id == bindparam("p_trial")))
    row = s.execute(stmt, {"p_trial": trial_id}).first()
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
    s.execute(update(Stage).where(Stage.sweep_id == sweep_id, Stage.status.in_(
        (StageStatus.RUNNING.value, StageStatus.LAUNCHING.value)))
              .values(status=StageStatus.CANCELLED.value))
    return ids


def trials_of(s: Session, sweep_id: int, stage_id: int | None = None) -> list[TrialRow]:
    q = (select(Trial, Stage.idx).join(Stage, Stage.id == Trial.stage_id)
         .where(Trial.sweep_id == sweep_id))
    if stage_id is not None:
        q = q.where(Trial.stage_id == stage_id)
    return _trial_rows(s, s.execute(q.order_by(Trial.id)).all())


def _trial_rows(s: Session, rows) -> list[TrialRow]:  # type: ignore[no-untyped-def]
    params = trial_params(s, [t.id for t, _ in rows])
    return [TrialRow(t.id, t.sweep_id, t.stage_id, idx, t.idx, t.status, t.seed, t.epochs,
                     t.best_val_acc, t.best_val_loss, t.best_epoch, t.attempts, t.worker, t.error,
                     t.parent_id, params[t.id]) for t, idx in rows]


def best_trials(s: Session, sweep_id: int, stage_id: int | None = None,
                limit: int = 1) -> list[TrialRow]:
    """The ``limit`` best scored ``done`` trials of a sweep (or of one stage), ranked by the
    database in ``coordinator.rank.rank``'s order: ``best_val_acc`` descending, then
    ``best_val_loss`` ascending (none last), then id. Loads only those rows, so a report
    on a sweep of 50,000 trials reads a handful (``ix_trials_*_status_acc``)."""
    q = (select(Trial, Stage.idx).join(Stage, Stage.id == Trial.stage_id)
         .where(Trial.sweep_id == sweep_id, Trial.status == TrialStatus.DONE.value,
                Trial.best_val_acc.is_not(None)))
    if stage_id is not None:
        q = q.where(Trial.stage_id == stage_id)
    q = q.order_by(Trial.best_val_acc.desc(), Trial.best_val_loss.is_(None),
                   Trial.best_val_loss.asc(), Trial.id.asc()).limit(limit)
    return _trial_rows(s, s.execute(q).all())


def best_score(s: Session, sweep_id: int) -> float | None:
    """The highest ``best_val_acc`` of the sweep's ``done`` trials (index-only)."""
    return s.scalar(select(func.max(Trial.best_val_acc)).where(
        Trial.sweep_id == sweep_id, Trial.status == TrialStatus.DONE.value))


def status_counts(s: Session, sweep_id: int) -> dict[int, dict[str, int]]:
    """stage id -> {status: count}."""
    out: dict[int, dict[str, int]] = {}
    # by stage id, not sweep id: ``ix_trials_stage_status_acc`` covers the count (index
    # only; 6 ms on 50,000 trials in SQLite, against 80 ms reading every trial row)
    stage_ids = select(Stage.id).where(Stage.sweep_id == sweep_id).scalar_subquery()
    rows = s.execute(select(Trial.stage_id, Trial.status, func.count())
                     .where(Trial.stage_id.in_(stage_ids))
                     .group_by(Trial.stage_id, Trial.status))
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
