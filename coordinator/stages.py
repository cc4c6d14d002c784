"""Advance a sweep from one stage to the next, exactly once.

Whichever worker runs the advancement job does it, holding the sweep's
transition lock (``storage.transitions.lock_sweep``); the compare-and-set on the
stage's status (running -> advanced once its quorum finished, advanced -> done
once all its trials did) and the creation of the next stage commit in one
transaction, so duplicate or concurrent advancement jobs create nothing twice
and skip nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator.config import StageConfig, SweepConfig
from coordinator.enqueue_order import longest_first, trial_cost
from coordinator.evidence import chance_threshold, is_at_chance
from coordinator.launch import plan_trials, trial_seed
from coordinator.rank import TrialOutcome, kept_for_refinement, rank, scored_trials
from coordinator.refine import Travel, boundary_flags, refine, travel_of
from coordinator.space import dist_from_row
from storage import attempts, transitions
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


def stage_quorum(cfg: SweepConfig, idx: int) -> int:
    """Trials of stage ``idx`` that must finish before the next is planned (all on the last)."""
    stage = cfg.stages[idx]
    return stage.trials if idx == len(cfg.stages) - 1 else stage.quorum_trials


def _plan_next(s: Session, engine: Engine, stage: sweep_store.StageInfo,
               sweep: sweep_store.SweepInfo) -> Advanced:
    """Rank the stage's quorum, flag edges, refine, create the next stage (if any)."""
    cfg = SweepConfig.from_dict(sweep.config)
    rows = sweep_store.stage_ranges(s, stage.id)
    space = {p: dist_from_row(r, cfg.space.get(p)) for p, r in rows.items()}
    quorum = [t for t in trial_store.trials_of(s, sweep.id, stage.id) if t.idx < stage.quorum]
    ranked = rank(outcomes(quorum))
    best = ranked[0] if ranked and ranked[0].status == "done" else None
    this_cfg = cfg.stages[stage.idx]
    travel = _flag_stage(s, sweep, stage, cfg, space, quorum, best)
    next_idx = stage.idx + 1
    if next_idx >= len(cfg.stages):
        return Advanced(stage.id, queue=sweep.queue)
    next_cfg = cfg.stages[next_idx]
    kept = kept_for_refinement(ranked, this_cfg)
    next_space = refine(space, [k.params for k in kept], best.params if best else {}, this_cfg,
                        travel)
    carried = carried_specs(ranked, this_cfg, next_cfg, cfg, next_idx)
    fresh = plan_trials(cfg, next_idx, next_space, next_cfg.trials - len(carried),
                        first_idx=len(carried))
    new_stage = sweep_store.add_stage(s, sweep.id, next_idx, next_cfg.epochs, next_cfg.trials,
                                      {p: d.to_row() for p, d in next_space.items()},
                                      quorum=stage_quorum(cfg, next_idx))
    ids = sweep_store.add_trials(s, sweep.id, new_stage, carried + fresh)
    for spec, child in zip(carried, ids, strict=False):
        assert spec.parent_id is not None
        attempts.copy_progress(s, engine, spec.parent_id, child)
    if next_idx == len(cfg.stages) - 1 and next_cfg.prune is None:
        # (a stage that prunes runs in index order: its verdicts wait for lower indices)
        ids = _longest_first(s, sweep, ids, carried + fresh, this_cfg.epochs)
    return Advanced(stage.id, new_stage, tuple(ids), queue=sweep.queue)


def _flag_stage(s: Session, sweep: sweep_store.SweepInfo, stage: sweep_store.StageInfo,
                cfg: SweepConfig, space: dict[str, Any], quorum: list[trial_store.TrialRow],
                best: TrialOutcome | None) -> Travel:
    """Record the stage's boundary flags (from its own trials, not carried ones) and
    whether it beat chance; how its flagged ranges travel."""
    own = rank(outcomes([t for t in quorum if t.parent_id is None]))
    flags = boundary_flags(space, scored_trials(own), cfg.stages[stage.idx].edge)
    recorded = sweep_store.flags_of(s, sweep.id)
    if not any(idx == stage.idx for idx, _ in recorded):  # `extend` plans from a ranked stage
        sweep_store.add_flags(s, sweep.id, stage.id, [
            sweep_store.FlagRow(f.param, f.value, f.low, f.high, f.side, f.at_limit, f.scale,
                                f.limit, f.reason) for f in flags])
    size = sweep_store.dataset_size(s, sweep.dataset_sha)
    at_chance = False
    diverged = any(t.status == "diverged" for t in quorum)
    if size is not None:
        n_val = max(1, round(size[0] * cfg.val_fraction))
        # nothing scored and nothing diverged (cancelled, failed): no evidence either way
        at_chance = (best is not None or diverged) and is_at_chance(
            best.score if best else None, size[1], n_val)
        sweep_store.mark_chance(s, stage.id, at_chance, chance_threshold(size[1], n_val))
    history = [(idx, f.param, f.side) for idx, f in recorded
               if not f.at_limit and idx < stage.idx]
    return travel_of(flags, history, stage.idx, at_chance)


def _longest_first(s: Session, sweep: sweep_store.SweepInfo, ids: list[int],
                   specs: list[sweep_store.TrialSpec], parent_epochs: int) -> list[int]:
    """The last stage's trials in the order to enqueue them: longest first (a carried
    trial only trains the epochs its parent did not)."""
    shape = sweep_store.dataset_shape(s, sweep.dataset_sha)
    if shape is None:
        return ids
    costs = [trial_cost(spec.params, spec.epochs - (parent_epochs if spec.parent_id else 0),
                        *shape) for spec in specs]
    return longest_first(ids, costs)


def _advance(s: Session, engine: Engine, stage_id: int) -> Advanced | None:
    # the sweep's transition lock first, then read: a concurrent close, plan or cancel
    # of this sweep has committed (and is seen) or waits for this one
    sweep_id = transitions.lock_sweep_of_stage(s, stage_id)
    if sweep_id is None:
        return None
    stage = sweep_store.get_stage(s, stage_id)
    sweep = sweep_store.get_sweep(s, sweep_id)
    assert stage is not None and sweep is not None
    search = stage.kind != StageKind.SEEDS.value  # seeds stages retrain for an ensemble
    result = None
    if transitions.claim_stage_advance(s, stage_id):
        result = _plan_next(s, engine, stage, sweep) if search else Advanced(stage_id,
                                                                             queue=sweep.queue)
    if (transitions.close_stage(s, stage_id) and search
            and transitions.finish_if_stages_done(s, sweep.id)):
        result = replace(result or Advanced(stage_id, queue=sweep.queue), sweep_done=True)
    return result


def advance(engine: Engine, stage_id: int) -> Advanced | None:
    """Plan the next stage once this one's quorum finished; close it once all did.

    Returns None when nothing was due (another worker did it, or not yet).
    """
    return transact(engine, lambda s: _advance(s, engine, stage_id))
