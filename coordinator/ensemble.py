"""Model ensembles (CS231n notes): average the predicted class probabilities of
several models and score them on the validation and the held-out test split.

Four ways, each compared with the best single model (the best search trial's
best checkpoint, raw weights):

- ``top-k``: the best checkpoints of the K best trials with different
  hyperparameters (a carried trial and its parent count once);
- ``seeds``: the best configuration retrained from K new initialisations, as
  trials of a 'seeds' stage queued for the workers, combined once they finish;
- ``snapshots``: the last K 'snapshot' checkpoints of the best trial
  (``keep_snapshots: K`` in the sweep config);
- ``average``: the running average (EMA) of the best trial's weights.

Test accuracy is computed only here; each result is recorded in ``ensembles``
(``coordinator.ensemble_text`` words it for the terminal).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator.choices import ENSEMBLE_METHODS
from coordinator.config import SweepConfig
from coordinator.launch import distinct_seed, enqueue_or_defer
from coordinator.rank import is_scored, rank
from coordinator.stages import advance, outcomes
from storage import checkpoints as checkpoint_store
from storage import ensembles as ensemble_store
from storage import sweeps as sweep_store
from storage import transitions
from storage import trials as trial_store
from storage.db import transact
from storage.meta import identity
from storage.models import StageKind, StageStatus, SweepStatus
from worker import models
from worker.data import Splits
from worker.dataset_cache import DatasetCache
from worker.nn.checkpoint import CheckpointError
from worker.nn.protocol import predict_proba
from worker.nn.saved import model_from_checkpoint
from worker.reconcile import reconcile

METHODS = ENSEMBLE_METHODS

OnProgress = Callable[[str, int, int], None]  # (what, done, total)
# Called once with the queue name when seed trials wait for workers; returns a
# function called on every poll (e.g. a worker pool's ``revive``).
StartWorkers = Callable[[str], Callable[[], object]]


class EnsembleError(RuntimeError):
    """This ensemble cannot be built; the message says why and what to do."""


class EnsembleUsageError(EnsembleError):
    """The sweep cannot give the ensemble asked for (bad input, exit 2): e.g. snapshots
    of a sweep run without ``keep_snapshots``."""


@dataclass(frozen=True)
class Member:
    """One model of an ensemble: a checkpoint of a trial and which weights to use."""

    trial_id: int
    epoch: int
    kind: str = "best"  # checkpoint kind: best | snapshot
    weights: str = "raw"  # raw | ema

    def to_dict(self) -> dict[str, object]:
        return {"trial": self.trial_id, "epoch": self.epoch, "checkpoint": self.kind,
                "weights": self.weights}


@dataclass(frozen=True)
class Scores:
    val_acc: float
    test_acc: float


@dataclass(frozen=True)
class EnsembleResult:
    id: int  # the ensembles row
    sweep: str
    method: str
    members: tuple[Member, ...]
    asked: int  # the K asked for (members may be fewer)
    ensemble: Scores
    single: Scores
    single_trial_id: int


@dataclass(frozen=True)
class SeedsPlan:
    """The 'seeds' stage retraining the best configuration."""

    stage_id: int
    trial_ids: tuple[int, ...]
    queue: str
    created: bool  # False when an earlier seeds stage of the same size was reused


# ---------------------------------------------------------------- math (pure)


def mean_proba(probs: Iterable[np.ndarray]) -> np.ndarray:
    """The average (N, C) of several (N, C) class-probability arrays."""
    total: np.ndarray | None = None
    n = 0
    for p in probs:
        total = p.astype(np.float32, copy=True) if total is None else total + p
        n += 1
    if total is None:
        raise ValueError("no probabilities to average")
    total /= np.float32(n)
    return total


def accuracy(proba: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows whose most probable class is the label."""
    return float(np.mean(proba.argmax(axis=1) == y)) if len(y) else float("nan")


def distinct_configs(ranked: list[trial_store.TrialRow], k: int) -> list[trial_store.TrialRow]:
    """The first ``k`` trials with parameters not seen before (best first)."""
    seen: set[str] = set()
    out = []
    for t in ranked:
        key = json.dumps(t.params, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out[:k]


# ---------------------------------------------------------------- reading the sweep


def _search_ranked(s: Session, sweep_id: int) -> list[trial_store.TrialRow]:
    """Scored ``done`` trials of the search stages, best first."""
    search = {st.id for st in sweep_store.stages_of(s, sweep_id)
              if st.kind == StageKind.SEARCH.value}
    rows = {t.id: t for t in trial_store.trials_of(s, sweep_id) if t.stage_id in search}
    return [rows[o.trial_id] for o in rank(outcomes(list(rows.values()))) if is_scored(o)]


def _best_trial(s: Session, sweep_id: int) -> trial_store.TrialRow:
    ranked = _search_ranked(s, sweep_id)
    if not ranked:
        raise EnsembleError("the sweep has no finished trial yet: nothing to ensemble")
    return ranked[0]


def _best_member(s: Session, trial: trial_store.TrialRow) -> Member:
    saved = checkpoint_store.of_kind(s, trial.id, "best")
    if not saved:
        raise EnsembleError(f"trial {trial.id} has no best checkpoint")
    return Member(trial.id, saved[0][0])


def sweep_splits(engine: Engine, sweep: sweep_store.SweepInfo) -> Splits:
    """The sweep's train/validation/test split, rebuilt exactly as the workers build it."""
    cfg = SweepConfig.from_dict(sweep.config)

    def fetch(sha: str) -> bytes:
        data = transact(engine, lambda s: sweep_store.dataset_bytes(s, sha))
        if data is None:
            raise EnsembleError(f"dataset {sha[:12]} of sweep {sweep.name} is not in the database")
        return data

    splits = DatasetCache().get(sweep.dataset_sha, sweep.seed, cfg.val_fraction,
                                cfg.test_fraction, fetch, cfg.preprocess)
    return splits.flat()  # the built-in MLP takes (N, D) rows


def load_model(engine: Engine, member: Member) -> Any:
    """The member's model (any registered model) holding its checkpoint's weights."""
    saved = dict(transact(engine, lambda s: checkpoint_store.of_kind(s, member.trial_id,
                                                                       member.kind)))
    if member.epoch not in saved:
        raise EnsembleError(f"trial {member.trial_id}: no {member.kind} checkpoint of epoch "
                            f"{member.epoch}")
    try:
        return model_from_checkpoint(saved[member.epoch], models.load, member.weights)
    except models.ModelUnavailable as exc:
        raise EnsembleError(f"trial {member.trial_id}: {exc}") from None
    except CheckpointError as exc:
        if member.weights == "ema":
            raise EnsembleUsageError(
                f"trial {member.trial_id} trained without a running average of its weights: "
                "set `ema_decay` (e.g. 0.999) under `train:` and run the sweep again") from None
        raise EnsembleError(f"trial {member.trial_id}: unusable checkpoint: {exc}") from None


def score_members(engine: Engine, members: list[Member], splits: Splits,
                  on_progress: OnProgress | None = None) -> Scores:
    """Validation and test accuracy of the members' averaged class probabilities."""
    val: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for i, m in enumerate(members):
        net = load_model(engine, m)
        val.append(predict_proba(net, splits.X_val))
        test.append(predict_proba(net, splits.X_test))
        if on_progress:
            on_progress("evaluating", i + 1, len(members))
    return Scores(accuracy(mean_proba(val), splits.y_val),
                  accuracy(mean_proba(test), splits.y_test))


# ---------------------------------------------------------------- members per method


def _top_k(s: Session, sweep_id: int, k: int) -> list[Member]:
    return [_best_member(s, t) for t in distinct_configs(_search_ranked(s, sweep_id), k)]


def _snapshots(s: Session, sweep_id: int, k: int) -> list[Member]:
    sweep = sweep_store.get_sweep(s, sweep_id)
    assert sweep is not None
    if not sweep.config.get("keep_snapshots"):
        raise EnsembleUsageError(
            f"sweep {sweep.name} kept no snapshots (its config has no `keep_snapshots`): "
            "set `keep_snapshots: K` in the sweep config and run it again, or use another "
            "--method")
    best = _best_trial(s, sweep_id)
    saved = checkpoint_store.of_kind(s, best.id, "snapshot")[:k]
    if not saved:
        raise EnsembleError(f"the best trial ({best.id}) kept no snapshot checkpoints: set "
                            "`keep_snapshots: K` in the sweep config and run the sweep again")
    return [Member(best.id, epoch, "snapshot") for epoch, _ in saved]


def _average(s: Session, sweep_id: int, k: int) -> list[Member]:
    single = _best_member(s, _best_trial(s, sweep_id))
    return [Member(single.trial_id, single.epoch, weights="ema")]


def _seeds(s: Session, sweep_id: int, k: int) -> list[Member]:
    stage = _seeds_stage(s, sweep_id, k)
    if stage is None:
        raise EnsembleError(f"no seeds stage of {k} trials: run with --method seeds to queue it")
    rows = trial_store.trials_of(s, sweep_id, stage.id)
    if any(not trial_store.is_final(t.status) for t in rows):
        raise EnsembleError(f"the seed trials of stage {stage.idx} have not all finished")
    done = [t for t in rows if t.status == "done"]
    if not done:
        raise EnsembleError(f"none of the {len(rows)} seed trials of stage {stage.idx} "
                            "finished training (see `hpsweep status`)")
    return [_best_member(s, t) for t in done]


MEMBERS: dict[str, Callable[[Session, int, int], list[Member]]] = {
    "top-k": _top_k, "seeds": _seeds, "snapshots": _snapshots, "average": _average}


# ---------------------------------------------------------------- seeds stage


def _seeds_stage(s: Session, sweep_id: int, k: int) -> sweep_store.StageInfo | None:
    """The latest seeds stage of ``k`` trials that was not cancelled, if any."""
    found = [st for st in sweep_store.stages_of(s, sweep_id)
             if st.kind == StageKind.SEEDS.value and st.n_trials == k
             and st.status != StageStatus.CANCELLED.value]
    return found[-1] if found else None


def plan_seeds(engine: Engine, sweep_id: int, k: int) -> SeedsPlan:
    """The seeds stage of ``k`` trials (the best configuration, new seeds), made once."""
    def work(s: Session) -> SeedsPlan:
        sweep = sweep_store.get_sweep(s, sweep_id)
        assert sweep is not None
        if sweep.status == SweepStatus.RUNNING.value:
            raise EnsembleError(f"sweep {sweep.name} is still running: seeds retrain its best "
                                "configuration once the search has ended (wait for it, or "
                                "`hpsweep cancel` it)")
        stage = _seeds_stage(s, sweep_id, k)
        if stage is not None:
            ids = tuple(t.id for t in trial_store.trials_of(s, sweep_id, stage.id))
            return SeedsPlan(stage.id, ids, sweep.queue, created=False)
        best = _best_trial(s, sweep_id)
        idx = max(st.idx for st in sweep_store.stages_of(s, sweep_id)) + 1
        stage_id = sweep_store.add_stage(s, sweep_id, idx, best.epochs, k, {},
                                         kind=StageKind.SEEDS.value)
        specs = [sweep_store.TrialSpec(idx=i, seed=distinct_seed(sweep.seed, idx, i),
                                       epochs=best.epochs, params=dict(best.params))
                 for i in range(k)]
        ids = tuple(sweep_store.add_trials(s, sweep_id, stage_id, specs))
        return SeedsPlan(stage_id, ids, sweep.queue, created=True)

    return transact(engine, work)


def queue_seeds(engine: Engine, conn: Redis | None, sweep_id: int, k: int) -> SeedsPlan:
    """Plan the seeds stage and enqueue its unfinished trials."""
    plan = plan_seeds(engine, sweep_id, k)
    queued = [t.id for t in transact(engine, lambda s: trial_store.trials_of(
        s, sweep_id, plan.stage_id)) if t.status == "queued"]
    enqueue_or_defer(conn, plan.queue, queued, identity(engine))
    return plan


def wait_for_stage(engine: Engine, conn: Redis | None, sweep_id: int, stage_id: int, *,
                   on_progress: OnProgress | None = None, tick: Callable[[], object] | None = None,
                   poll: float = 0.5, reconcile_every: float = 3.0) -> None:
    """Block until every trial of the stage is final, reconciling now and then (lost
    jobs, expired leases), then close the stage."""
    last = time.monotonic()
    while True:
        rows = transact(engine, lambda s: trial_store.trials_of(s, sweep_id, stage_id))
        finished = sum(trial_store.is_final(t.status) for t in rows)
        if on_progress:
            on_progress("training seeds", finished, len(rows))
        if finished == len(rows):
            break
        if tick:
            tick()
        if conn is not None and time.monotonic() - last > reconcile_every:
            reconcile(engine, conn, sweep_id)
            last = time.monotonic()
        time.sleep(poll)
    advance(engine, stage_id)  # closes the seeds stage (a lost advancement job's work)


# ---------------------------------------------------------------- entry points


def evaluate(engine: Engine, sweep_id: int, method: str, k: int,
             on_progress: OnProgress | None = None) -> EnsembleResult:
    """Build the ensemble of ``method`` from finished trials, score it, record it."""
    if method not in MEMBERS:
        raise ValueError(f"unknown ensemble method {method!r}; expected one of "
                         f"{', '.join(METHODS)}")

    def pick(s: Session) -> tuple[sweep_store.SweepInfo, list[Member], Member]:
        sweep = sweep_store.get_sweep(s, sweep_id)
        assert sweep is not None
        return sweep, MEMBERS[method](s, sweep_id, k), _best_member(s, _best_trial(s, sweep_id))

    sweep, members, single = transact(engine, pick)
    splits = sweep_splits(engine, sweep)
    ens = score_members(engine, members, splits, on_progress)
    one = score_members(engine, [single], splits)
    row_id = transact(engine, lambda s: ensemble_store.add_ensemble(
        s, sweep_id, method, [m.to_dict() for m in members], val_acc=ens.val_acc,
        test_acc=ens.test_acc, single_val_acc=one.val_acc, single_test_acc=one.test_acc))
    return EnsembleResult(row_id, sweep.name, method, tuple(members), k, ens, one,
                          single.trial_id)


def run_ensemble(engine: Engine, sweep_id: int, method: str, k: int, *,
                 conn: Redis | None = None, wait: bool = True,
                 on_progress: OnProgress | None = None,
                 start_workers: StartWorkers | None = None) -> EnsembleResult | SeedsPlan:
    """``hpsweep ensemble``: for ``seeds`` queue the retraining first and (with ``wait``)
    wait for it; then evaluate. Returns the plan when not waiting for seeds."""
    if method == "seeds":
        plan = queue_seeds(engine, conn, sweep_id, k)
        if not wait:
            return plan
        unfinished = transact(engine, lambda s: transitions.unfinished_trial_count(
            s, plan.stage_id))
        tick = start_workers(plan.queue) if start_workers and unfinished else None
        wait_for_stage(engine, conn, sweep_id, plan.stage_id, on_progress=on_progress, tick=tick)
    return evaluate(engine, sweep_id, method, k, on_progress)
