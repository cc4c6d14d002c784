"""A sweep's state transitions: the sweep lock and every compare-and-set on stage and
sweep status (advance, close, finish, reopen), and the readiness queries behind them.

Helpers take a ``Session`` first and never commit: callers frame the unit of work
(``storage.db.transact``). Lock order: the sweep row (``lock_sweep``), then stage rows.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Exists,
    Select,
    Update,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from storage.db import bind_of, cached_statement
from storage.models import (
    FINAL_TRIAL_STATUSES,
    Stage,
    StageKind,
    StageStatus,
    Sweep,
    SweepStatus,
    Trial,
    TrialStatus,
)


def unfinished_trial_count(s: Session, stage_id: int) -> int:
    return s.scalar(select(func.count()).select_from(Trial).where(
        Trial.stage_id == stage_id, Trial.status.not_in(FINAL_TRIAL_STATUSES))) or 0


def _open_trials(stage_id: Any, below: Any = None) -> Exists:
    """EXISTS a non-final trial of the stage (with ``idx < below`` when given).

    Core columns, so that ``stage_is_ready`` stays a cheap Core query after every trial."""
    t = Trial.__table__.c
    cond = [t.stage_id == stage_id, t.status.not_in(FINAL_TRIAL_STATUSES)]
    if below is not None:
        cond.append(t.idx < below)
    return select(t.id).where(*cond).exists()


def _lock_statement(key: Any) -> Select[Any]:
    """SELECT the sweep row (id = ``key``) FOR NO KEY UPDATE: it excludes the other
    transitions of the sweep, not the inserts of rows that reference it (those take KEY
    SHARE locks). SQLite compiles it to a plain SELECT: its BEGIN IMMEDIATE write
    transactions are serialised already."""
    sw = Sweep.__table__.c
    return select(sw.id, sw.status).where(sw.id == key).with_for_update(key_share=True)


def lock_sweep(s: Session, sweep_id: int) -> str | None:
    """Take the sweep's transition lock until the transaction ends; returns the sweep's
    status read under it (None: no such sweep).

    Every state transition of a sweep (plan or close a stage, finish or cancel the
    sweep, a trial's finish deciding that its stage is due) takes it first, BEFORE
    reading what the transition depends on: under READ COMMITTED each later statement
    then sees what the previous holder committed, so no interleaving skips a transition
    (two stages closing at once each saw the other one open: the sweep never finished).
    Lock order: the sweep row first, then stage rows. No transition waits on a running
    trial's row, so a finishing trial may take this lock after updating its own row.
    A trial's per-epoch writes never take it.
    """
    row = s.execute(cached_statement(bind_of(s), "sweep-lock", lambda: _lock_statement(
        bindparam("p_sweep"))), {"p_sweep": sweep_id}).first()
    return None if row is None else row[1]


def lock_sweep_of_stage(s: Session, stage_id: int) -> int | None:
    """``lock_sweep`` on the sweep of ``stage_id``; returns the sweep's id (None: no such
    stage)."""
    def build() -> Select[Any]:
        st = Stage.__table__.c
        return _lock_statement(select(st.sweep_id).where(st.id == bindparam("p_stage"))
                               .scalar_subquery())

    row = s.execute(cached_statement(bind_of(s), "sweep-lock-of-stage", build),
                    {"p_stage": stage_id}).first()
    return None if row is None else row[0]


def claim_stage_advance(s: Session, stage_id: int) -> bool:
    """Compare-and-set running -> advanced once the stage's quorum has finished.

    True for exactly one caller: that caller plans the next stage (or, on the
    last stage, whose quorum is all its trials, records the final flags).
    """
    res = s.execute(update(Stage).where(Stage.id == stage_id,
                                        Stage.status == StageStatus.RUNNING.value,
                                        ~_open_trials(Stage.id, Stage.quorum))
                    .values(status=StageStatus.ADVANCED.value))
    return res.rowcount == 1


def close_stage(s: Session, stage_id: int) -> bool:
    """Compare-and-set advanced -> done once every trial of the stage has finished."""
    def build() -> Update:
        st = Stage.__table__.c
        return (update(Stage.__table__)
                .where(st.id == bindparam("p_stage"), st.status == StageStatus.ADVANCED.value,
                       ~_open_trials(st.id))
                .values(status=StageStatus.DONE.value, finished_at=func.now()))

    res = s.execute(cached_statement(bind_of(s), "stage-close", build), {"p_stage": stage_id})
    return res.rowcount == 1


def search_stages_done() -> ColumnElement[bool]:
    """SQL: every search stage of the sweep (``sweeps`` row in the outer query) is done."""
    done = (select(func.count()).select_from(Stage)
            .where(Stage.sweep_id == Sweep.id, Stage.kind == StageKind.SEARCH.value,
                   Stage.status == StageStatus.DONE.value)
            .correlate(Sweep).scalar_subquery())
    return done >= Sweep.n_stages


def finish_if_stages_done(s: Session, sweep_id: int) -> bool:
    """Compare-and-set running -> done once every search stage of the sweep is done.

    Call it holding ``lock_sweep``: a stage closed by a concurrent transaction is then
    committed, and seen, before this reads the stages."""
    def build() -> Update:
        return (update(Sweep).where(Sweep.id == bindparam("p_sweep"),
                                    Sweep.status == SweepStatus.RUNNING.value,
                                    search_stages_done())
                .values(status=SweepStatus.DONE.value, finished_at=func.now()))

    res = s.execute(cached_statement(bind_of(s), "sweep-finish", build), {"p_sweep": sweep_id})
    return res.rowcount == 1


def stage_closable() -> ColumnElement[bool]:
    """SQL: an advanced stage whose trials have all finished (``close_stage`` is due)."""
    st = Stage.__table__.c
    return and_(st.status == StageStatus.ADVANCED.value, ~_open_trials(st.id))


def _ready() -> ColumnElement[bool]:
    """A stage whose quorum finished (to advance) or whose trials all did (to close)."""
    st = Stage.__table__.c
    return or_(and_(st.status == StageStatus.RUNNING.value, ~_open_trials(st.id, st.quorum)),
               stage_closable())


def settle_stage(s: Session, stage_id: int) -> bool:
    """In the transaction that just ended one of the stage's trials: under the sweep's
    transition lock, close the stage if that was its last open trial (and finish the
    sweep if every stage is then done), in this same commit. Returns whether the
    coordinator has work on the stage (its ``advance-`` job is due): planning the next
    stage, or — the stage just closed — cleaning its checkpoints (retention).

    Of two trials ending at once the later one waits for the lock and sees the earlier
    one's final status, so no due transition goes unnoticed."""
    sweep_id = lock_sweep_of_stage(s, stage_id)
    if sweep_id is None:
        return False
    if close_stage(s, stage_id):
        finish_if_stages_done(s, sweep_id)
        return True
    return stage_is_ready(s, stage_id)


def stage_is_ready(s: Session, stage_id: int) -> bool:
    """Whether the stage's advancement (or closing) is due."""
    st, bind = Stage.__table__.c, bind_of(s)
    stmt = cached_statement(bind, "stage-ready", lambda: select(st.id).where(
        st.id == bindparam("p_stage"), _ready()))
    return s.execute(stmt, {"p_stage": stage_id}).first() is not None


def stages_ready_to_advance(s: Session, sweep_id: int | None = None) -> list[tuple[int, str]]:
    """(stage id, queue) of stages of running sweeps (or 'seeds' stages, which run after
    their sweep ended) with an advancement or closing due."""
    q = (select(Stage.id, Sweep.queue).join(Sweep, Sweep.id == Stage.sweep_id)
         .where(or_(Sweep.status == SweepStatus.RUNNING.value,
                    Stage.kind == StageKind.SEEDS.value), _ready()))
    if sweep_id is not None:
        q = q.where(Sweep.id == sweep_id)
    return [(sid, qn) for sid, qn in s.execute(q)]


def finish_sweep(s: Session, sweep_id: int, status: str = SweepStatus.DONE.value) -> bool:
    res = s.execute(update(Sweep).where(Sweep.id == sweep_id,
                                        Sweep.status == SweepStatus.RUNNING.value)
                    .values(status=status, finished_at=func.now()))
    return res.rowcount == 1


def cancel_unfinished(s: Session, sweep_id: int) -> list[int]:
    """Mark every queued trial of a sweep cancelled, and its running stages; running trials
    stop at their next epoch."""
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


def reopen_sweep(s: Session, sweep_id: int, was: str, config: dict[str, Any],
                 n_stages: int) -> bool:
    """Compare-and-set a finished or cancelled sweep (status ``was``) back to running with
    a longer ``config``; closes its search stages (their trials are all final)."""
    res = s.execute(update(Sweep).where(Sweep.id == sweep_id, Sweep.status == was)
                    .values(status=SweepStatus.RUNNING.value, finished_at=None,
                            config=json.dumps(config), n_stages=n_stages))
    if res.rowcount != 1:
        return False
    s.execute(update(Stage).where(Stage.sweep_id == sweep_id,
                                  Stage.kind == StageKind.SEARCH.value,
                                  Stage.status != StageStatus.DONE.value)
              .values(status=StageStatus.DONE.value, finished_at=func.now()))
    return True
