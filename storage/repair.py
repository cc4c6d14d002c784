"""Self-healing of a sweep's storage-level transitions, for the reconcilers.

A transition whose trigger was lost (a worker killed between a trial's commit and
its advancement job, a Redis flush, a database left by an older version in the
state of a skipped transition) is found here from the database alone and done
under the sweep's transition lock (``storage.transitions.lock_sweep``):

- an ``advanced`` stage whose trials have all ended is closed;
- a running sweep whose search stages are all done is finished;
- a cancelled sweep's leftover running stages and queued trials are cancelled.

Planning a stage needs the coordinator: the reconciler enqueues that as a job
(``storage.transitions.stages_ready_to_advance``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, union
from sqlalchemy.orm import Session

from storage import transitions
from storage.models import Stage, StageStatus, Sweep, SweepStatus, Trial, TrialStatus


@dataclass(frozen=True)
class Repaired:
    sweep_id: int
    closed: tuple[int, ...] = ()  # stage ids closed
    finished: bool = False  # the sweep was finished
    cancelled: tuple[int, ...] = ()  # leftover queued trials of a cancelled sweep


def sweeps_to_repair(s: Session, sweep_id: int | None = None) -> list[int]:
    """Ids of sweeps with a storage-level transition due (cheap: read every few seconds
    by every worker's reconciler)."""
    cancelled = Sweep.status == SweepStatus.CANCELLED.value
    found = union(
        select(Stage.sweep_id).where(transitions.stage_closable()),
        select(Sweep.id).where(Sweep.status == SweepStatus.RUNNING.value,
                               transitions.search_stages_done()),
        select(Stage.sweep_id).join(Sweep, Sweep.id == Stage.sweep_id)
        .where(cancelled, Stage.status.in_((StageStatus.RUNNING.value,
                                            StageStatus.LAUNCHING.value))),
        # from the (few) cancelled sweeps, not the (many) queued trials
        select(Sweep.id).where(cancelled, select(Trial.id).where(
            Trial.sweep_id == Sweep.id, Trial.status == TrialStatus.QUEUED.value).exists()),
    ).subquery()
    q = select(found.c[0])
    if sweep_id is not None:
        q = q.where(found.c[0] == sweep_id)
    return sorted(set(s.scalars(q)))


def repair_sweep(s: Session, sweep_id: int) -> Repaired:
    """Do the sweep's due storage-level transitions, under its transition lock."""
    status = transitions.lock_sweep(s, sweep_id)
    if status is None:
        return Repaired(sweep_id)
    if status == SweepStatus.CANCELLED.value:
        cancelled = tuple(transitions.cancel_unfinished(s, sweep_id))
        return Repaired(sweep_id, close_finished_stages(s, sweep_id), cancelled=cancelled)
    closed = close_finished_stages(s, sweep_id)
    return Repaired(sweep_id, closed, transitions.finish_if_stages_done(s, sweep_id))


def close_finished_stages(s: Session, sweep_id: int) -> tuple[int, ...]:
    """Close the sweep's advanced stages whose trials have all ended (hold its lock)."""
    due = s.scalars(select(Stage.id).where(Stage.sweep_id == sweep_id,
                                           transitions.stage_closable()).order_by(Stage.idx))
    return tuple(st for st in list(due) if transitions.close_stage(s, st))
