"""Advance a sweep from one stage to the next, exactly once.

Whichever worker runs the advancement job does it; the compare-and-set on
the stage's status (running -> done, only while all its trials are final)
and the creation of the next stage commit in one transaction, so duplicate
or concurrent advancement jobs create nothing twice and skip nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator.config import StageConfig, SweepConfig
from coordinator.launch import plan_trials, trial_seed
from coordinator.rank import TrialOutcome, kept_for_refinement, rank
from coordinator.refine import boundary_flags, refine
from coordinator.space import dist_from_row
from storage import sweeps as sweep_store
from storage import trials as trial_store
from storage.db import transact
from storage.models import StageKind


@dataclass(frozen=True)
class Advanced:
    stage_id: int
    next_stage_id: int | None = None
    trial_ids: tuple[int, ...] = ()
    sweep_done: bool = False
    queue: str = ""


def outcomes(rows: list[trial_store.TrialRow]) -> list[TrialOutcome]:
    return [TrialOutcome(trial_id=t.id, status=t.status, score=t.best_val_acc,
                         val_loss=t.best_val_loss, params=t.params) for t in rows]


def carried_specs(ranked: list[TrialOutcome], stage: StageConfig, next_stage: StageConfig,
                  cfg: SweepConfig, next_idx: int) -> list[sweep_store.TrialSpec]:
    """The best ``carry`` done trials, re-run at the next budget from their checkpoints."""
    done = [t for t in ranked if t.status == "done"][: min(stage.carry, next_stage.trials)]
    return [sweep_store.TrialSpec(idx=i, seed=trial_seed(cfg, next_idx, i),
                                  epochs=next_stage.epochs, params=dict(t.params),
                                  parent_id=t.trial_id) for i, t in enumerate(done)]


def _advance(s: Session, engine: Engine, stage_id: int) -> Advanced | None:
    if not sweep_store.claim_stage_advance(s, stage_id):
        return None
    stage = sweep_store.get_stage(s, stage_id)
    assert stage is not None
    sweep = sweep_store.get_sweep(s, stage.sweep_id)
    assert sweep is not None
    if stage.kind == StageKind.SEEDS.value:  # retraining for an ensemble: closed, no successor
        return Advanced(stage_id, queue=sweep.queue)
    cfg = SweepConfig.from_dict(sweep.config)
    space = {p: dist_from_row(r) for p, r in sweep_store.stage_ranges(s, stage_id).items()}
    ranked = rank(outcomes(trial_store.trials_of(s, sweep.id, stage_id)))
    best = ranked[0] if ranked and ranked[0].status == "done" else None
    if best is not None:
        flags = boundary_flags(space, best.params)
        sweep_store.add_flags(s, sweep.id, stage_id, [
            sweep_store.FlagRow(f.param, f.value, f.low, f.high, f.side, f.at_limit)
            for f in flags])
    next_idx = stage.idx + 1
    if next_idx >= len(cfg.stages):
        sweep_store.finish_sweep(s, sweep.id)
        return Advanced(stage_id, sweep_done=True, queue=sweep.queue)
    this_cfg, next_cfg = cfg.stages[stage.idx], cfg.stages[next_idx]
    next_space: dict[str, Any] = dict(space)
    if best is not None:
        kept = kept_for_refinement(ranked, this_cfg)
        next_space = refine(space, [k.params for k in kept], best.params, this_cfg)
    carried = carried_specs(ranked, this_cfg, next_cfg, cfg, next_idx)
    fresh = plan_trials(cfg, next_idx, next_space, next_cfg.trials - len(carried),
                        first_idx=len(carried))
    new_stage = sweep_store.add_stage(s, sweep.id, next_idx, next_cfg.epochs, next_cfg.trials,
                                      {p: d.to_row() for p, d in next_space.items()})
    ids = sweep_store.add_trials(s, sweep.id, new_stage, carried + fresh)
    for spec, child in zip(carried, ids, strict=False):
        assert spec.parent_id is not None
        trial_store.copy_progress(s, engine, spec.parent_id, child)
    return Advanced(stage_id, new_stage, tuple(ids), queue=sweep.queue)


def advance(engine: Engine, stage_id: int) -> Advanced | None:
    """Close a finished stage and open the next one; None if not (or no longer) due."""
    return transact(engine, lambda s: _advance(s, engine, stage_id))
