"""Trials as reports read them: rows with their params, the best of a sweep, status
counts, and whether a trial's work goes on (``live``). The attempt's writes live in
``storage.attempts``, its checkpoints in ``storage.checkpoints``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, bindparam, func, or_, select
from sqlalchemy.orm import Session

from storage.db import bind_of, cached_statement
from storage.models import (
    FINAL_TRIAL_STATUSES,
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

_TRIALS = Trial.__table__
_SWEEPS = Sweep.__table__
_STAGES = Stage.__table__
_PARAMS = Param.__table__


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


def trial_params(s: Session, trial_ids: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {t: {} for t in trial_ids}
    if not trial_ids:
        return out
    stmt = (select(_PARAMS.c.trial_id, _PARAMS.c.name, _PARAMS.c.value, _PARAMS.c.value_text)
            .where(_PARAMS.c.trial_id.in_(bindparam("ids", expanding=True))))
    for trial_id, name, value, value_text in s.execute(stmt, {"ids": list(trial_ids)}):
        out[trial_id][name] = param_value(value, value_text)
    return out


def live() -> ColumnElement[bool]:
    """SQL: the trial's work goes on: its sweep runs, or its stage is a running 'seeds'
    stage (the best configuration retrained for an ensemble, after the search ended)."""
    seeds = select(_STAGES.c.id).where(_STAGES.c.kind == StageKind.SEEDS.value,
                                       _STAGES.c.status == StageStatus.RUNNING.value)
    return or_(_SWEEPS.c.status == SweepStatus.RUNNING.value, _TRIALS.c.stage_id.in_(seeds))


def trial_exists(s: Session, trial_id: int) -> bool:
    return s.get(Trial, trial_id) is not None


def trial_best(s: Session, trial_id: int) -> tuple[float | None, float | None, int | None]:
    """(best_val_acc, best_val_loss, best_epoch) recorded so far."""
    t = s.get(Trial, trial_id)
    return (t.best_val_acc, t.best_val_loss, t.best_epoch) if t else (None, None, None)


def queued_trials(s: Session, sweep_id: int | None = None,
                  window: int | None = None) -> list[tuple[int, str]]:
    """(trial id, queue name) of queued trials in running sweeps or 'seeds' stages;
    with ``window``, only the first ``window`` of each sweep by id."""
    q = (select(Trial.id, Sweep.queue, Trial.sweep_id).join(Sweep, Sweep.id == Trial.sweep_id)
         .where(Trial.status == TrialStatus.QUEUED.value, live()))
    if sweep_id is not None:
        q = q.where(Sweep.id == sweep_id)
    if window is not None:
        rank = func.row_number().over(partition_by=Trial.sweep_id, order_by=Trial.id)
        ranked = q.add_columns(rank.label("n")).subquery()
        q = select(ranked.c.id, ranked.c.queue).where(ranked.c.n <= window)
        return [(t, qn) for t, qn in s.execute(q.order_by(ranked.c.id))]
    return [(t, qn) for t, qn, _ in s.execute(q.order_by(Trial.id))]


def still_queued(s: Session, trial_ids: list[int]) -> set[int]:
    """Which of ``trial_ids`` are ``queued`` now."""
    found: set[int] = set()
    for lo in range(0, len(trial_ids), 5_000):  # under every driver's parameter limit
        chunk = trial_ids[lo:lo + 5_000]
        found.update(s.scalars(select(Trial.id).where(
            Trial.id.in_(chunk), Trial.status == TrialStatus.QUEUED.value)))
    return found


def trial_state(s: Session, trial_id: int) -> tuple[str, str] | None:
    """(trial status, sweep status), or None for an unknown trial; a trial of a running
    'seeds' stage reads its sweep as 'running' (its work goes on after the search)."""
    t = _TRIALS.c
    stmt = cached_statement(bind_of(s), "trial-state", lambda: select(
        t.status, _SWEEPS.c.status, live()).join_from(
        _TRIALS, _SWEEPS, _SWEEPS.c.id == t.sweep_id).where(t.id == bindparam("p_trial")))
    row = s.execute(stmt, {"p_trial": trial_id}).first()
    if row is None:
        return None
    return (row[0], SweepStatus.RUNNING.value if row[2] else row[1])


def trials_of(s: Session, sweep_id: int, stage_id: int | None = None) -> list[TrialRow]:
    q = (select(Trial, Stage.idx).join(Stage, Stage.id == Trial.stage_id)
         .where(Trial.sweep_id == sweep_id))
    if stage_id is not None:
        q = q.where(Trial.stage_id == stage_id)
    return _trial_rows(s, s.execute(q.order_by(Trial.id)).all())


def _trial_rows(s: Session, rows: Sequence[Row[Any]]) -> list[TrialRow]:
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
