"""A launch that streams its stage 0 in batches: the ``launching`` stage status.

A stage of more than one batch of trials (``coordinator.launch.LAUNCH_BATCH``) is
written in several transactions so that workers start before the launch ends; until
its last batch is in, it is ``launching`` and can neither advance nor close.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateIndex, DropIndex

from storage.models import Param, Stage, StageStatus, Sweep, SweepStatus, Trial
from storage.sweeps import SweepInfo, TrialSpec, add_trials, get_sweep
from storage.transitions import lock_sweep

# The one secondary index of ``params`` (users' queries by name and value). Inserting a
# million trials' rows into it costs ~45 % of a launch on SQLite (inserts land all over
# the index, whose pages outgrow the cache); building it again from the finished table
# costs a few seconds (``benchmarks/launch.py``). Workers read params by trial id only.
_PARAMS_BY_NAME = next(ix for ix in Param.__table__.indexes if ix.name == "ix_params_name")


def suspend_params_index(s: Session) -> None:
    """Drop the params-by-name index for a big launch (``restore_params_index`` after)."""
    s.execute(DropIndex(_PARAMS_BY_NAME, if_exists=True))


def restore_params_index(s: Session) -> None:
    """Build the params-by-name index again if it is missing (a no-op otherwise; ``IF NOT
    EXISTS`` in the statement itself, so two launches ending together cannot collide)."""
    s.execute(CreateIndex(_PARAMS_BY_NAME, if_not_exists=True))


def written(s: Session, stage_id: int) -> int:
    """How many trials of the stage are written: they have idx 0, 1, 2, … in order."""
    top = s.scalar(select(func.max(Trial.idx)).where(Trial.stage_id == stage_id))
    return 0 if top is None else int(top) + 1


def add_launch_batch(s: Session, stage_id: int, specs: list[TrialSpec]) -> list[int] | None:
    """``add_trials`` for the next batch of a ``launching`` stage. None, writing nothing,
    when the stage is no longer launching, its sweep no longer runs (cancelled), or the
    batch is not the next one (a second writer, such as ``resume`` during a live launch,
    got there first: checked under the sweep's lock, so one of them stops)."""
    stage = s.get(Stage, stage_id)
    if stage is None or stage.status != StageStatus.LAUNCHING.value or \
            lock_sweep(s, stage.sweep_id) != SweepStatus.RUNNING.value or \
            written(s, stage_id) != specs[0].idx:
        return None
    return add_trials(s, stage.sweep_id, stage_id, specs)


def end_launch(s: Session, stage_id: int) -> bool:
    """Compare-and-set launching -> running once every trial of the stage is written."""
    stage = s.get(Stage, stage_id)
    if stage is None or written(s, stage_id) < stage.n_trials:
        return False
    res = s.execute(update(Stage).where(Stage.id == stage_id,
                                        Stage.status == StageStatus.LAUNCHING.value)
                    .values(status=StageStatus.RUNNING.value))
    return res.rowcount == 1


def launching_stage(s: Session, stage_id: int) -> tuple[SweepInfo, int] | None:
    """(its sweep, trials written so far) for a ``launching`` stage of a running sweep."""
    stage = s.get(Stage, stage_id)
    if stage is None or stage.status != StageStatus.LAUNCHING.value:
        return None
    sweep = get_sweep(s, stage.sweep_id)
    if sweep is None or sweep.status != SweepStatus.RUNNING.value:
        return None
    return sweep, written(s, stage_id)


def launching_stages(s: Session, sweep_id: int | None = None) -> list[int]:
    """Ids of the ``launching`` stages of running sweeps (an interrupted launch, or one
    still writing)."""
    q = (select(Stage.id).join(Sweep, Sweep.id == Stage.sweep_id)
         .where(Stage.status == StageStatus.LAUNCHING.value,
                Sweep.status == SweepStatus.RUNNING.value))
    if sweep_id is not None:
        q = q.where(Sweep.id == sweep_id)
    return list(s.scalars(q.order_by(Stage.id)))
