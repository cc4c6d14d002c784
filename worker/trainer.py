"""One attempt at one trial: claim, resume or start, train epoch by epoch, finish.

Each epoch's curve row, checkpoints and lease renewal commit in one short
transaction fenced by the attempt's lease token; a ``worker.lease.LeaseKeeper``
keeps the lease alive during long epochs. Divergence and cancellation are statuses, not
errors. Nothing here talks to Redis: ``worker.jobs`` does that.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage import attempts, transitions
from storage import checkpoints as checkpoint_store
from storage import sweeps as sweep_store
from storage.attempts import ClaimedTrial, EpochRecord, LeaseLost
from storage.db import transact
from storage.models import TrialStatus
from worker import models
from worker.data import Splits
from worker.dataset_cache import DatasetCache
from worker.defaults import SweepSettings
from worker.lease import LeaseKeeper
from worker.nn.checkpoint import CheckpointError
from worker.nn.hyper import SPEC, Hyper
from worker.nn.protocol import ModelSpec
from worker.nn.training import EpochResult, TrainState
from worker.prune import PruneGate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialContext:
    """What the attempt needs besides the trial itself."""

    engine: Engine
    worker: str
    lease_seconds: float
    datasets: DatasetCache
    stop_requested: Callable[[], bool] = lambda: False
    # sweep id -> its (immutable) config, dataset and limits: read once per process
    sweeps: dict[int, sweep_store.SweepInfo] = field(default_factory=dict)
    keeper: LeaseKeeper | None = None  # the process's lease renewer (else one per attempt)
    models: frozenset[str] | None = None  # the models this worker offers (None: all installed)


@dataclass(frozen=True)
class Outcome:
    trial_id: int
    status: str  # a TrialStatus value, or "noop" when the trial was not ours to run
    stage_id: int | None = None
    epochs_run: int = 0
    # whether the stage's advancement became due, checked as the trial finished (None: not
    # checked; the caller asks the database)
    stage_ready: bool | None = None


@dataclass(frozen=True)
class Claim:
    """A claimed trial with what its attempt needs, read in the claim's transaction."""

    trial: ClaimedTrial
    sweep: sweep_store.SweepInfo
    saved: list[tuple[str, int, bytes]]  # resumable checkpoints, newest first


SWEEP_CACHE_SIZE = 64


def score_of(res: EpochResult, select: str) -> tuple[float, float]:
    """(validation accuracy, validation loss) that rank this epoch, per ``select``."""
    raw = (res.val_acc, res.val_loss)
    if res.ema_val_acc is None or select == "raw":
        return raw
    ema = (res.ema_val_acc, res.ema_val_loss if res.ema_val_loss is not None else res.val_loss)
    if select == "ema":
        return ema
    return ema if (ema[0], -ema[1]) > (raw[0], -raw[1]) else raw


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def curve_row(res: EpochResult, seconds: float) -> dict[str, Any]:
    return {"train_loss": _finite(res.train_loss), "train_acc": _finite(res.train_acc),
            "val_loss": _finite(res.val_loss), "val_acc": _finite(res.val_acc),
            "ema_val_loss": _finite(res.ema_val_loss), "ema_val_acc": _finite(res.ema_val_acc),
            "lr": float(res.lr), "seconds": float(seconds)}


def claim_trial(ctx: TrialContext, trial_id: int, token: str) -> Claim | None:
    """Claim the trial, and read its sweep (once per process) and checkpoints, in one
    transaction."""
    def work(s: Session) -> Claim | None:
        trial = attempts.claim(s, ctx.engine, trial_id, token, ctx.worker, ctx.lease_seconds)
        if trial is None:
            return None
        sweep = ctx.sweeps.get(trial.sweep_id) or sweep_store.get_sweep(s, trial.sweep_id)
        assert sweep is not None
        return Claim(trial, sweep, checkpoint_store.resumable(s, trial.id))

    claim = transact(ctx.engine, work)
    if claim is not None and claim.sweep.id not in ctx.sweeps:
        if len(ctx.sweeps) >= SWEEP_CACHE_SIZE:
            ctx.sweeps.pop(next(iter(ctx.sweeps)))
        ctx.sweeps[claim.sweep.id] = claim.sweep
    return claim


def load_splits(ctx: TrialContext, sweep: sweep_store.SweepInfo) -> Splits:
    settings = SweepSettings.of(sweep.config)

    def fetch(sha: str) -> bytes:
        data = transact(ctx.engine, lambda s: sweep_store.dataset_bytes(s, sha))
        if data is None:
            raise LookupError(f"dataset {sha[:12]} is not in the database")
        return data

    splits = ctx.datasets.get(sweep.dataset_sha, sweep.seed, settings.val_fraction,
                              settings.test_fraction, fetch, settings.preprocess)
    return splits.flat()  # the built-in MLP takes (N, D) rows


def model_spec(ctx: TrialContext, sweep: sweep_store.SweepInfo, trial: ClaimedTrial,
               splits: Splits) -> ModelSpec:
    """The trial's model: the sweep's registered model (``ModelUnavailable`` when this worker
    does not offer it) with the trial's constructor hyperparameters."""
    name = SweepSettings.of(sweep.config).model
    cls = models.check_offered(name, ctx.models)
    return models.spec_for(name, cls, splits.input_shape, splits.n_classes, trial.params)


def resume_or_init(trial: ClaimedTrial, saved: list[tuple[str, int, bytes]], hyper: Hyper,
                   spec: ModelSpec) -> TrainState:
    """The newest checkpoint that decodes, else a fresh model from the trial's seed."""
    for kind, epoch, data in saved:
        try:
            state = TrainState.from_checkpoint(hyper, data, spec)
        except CheckpointError as exc:
            log.warning("trial %d: %s checkpoint of epoch %d is corrupt (%s); trying an older one",
                        trial.id, kind, epoch, exc)
            continue
        log.info("trial %d: resuming after epoch %d", trial.id, state.epoch)
        return state
    if saved:
        log.warning("trial %d: no usable checkpoint; restarting from scratch", trial.id)
    return TrainState.create(hyper, spec.input_shape, spec.num_classes, trial.seed, spec)


@dataclass
class _Best:
    acc: float | None = None
    loss: float | None = None
    epoch: int | None = None
    improved: bool | None = None  # whether this attempt's latest epoch was a new best

    def update(self, acc: float, loss: float, epoch: int) -> bool:
        self.improved = self.acc is None or (acc, -loss) > (self.acc, -(self.loss or 0.0))
        if self.improved:
            self.acc, self.loss, self.epoch = acc, loss, epoch
        return self.improved


def record_epoch(ctx: TrialContext, trial: ClaimedTrial, token: str, state: TrainState,
                 res: EpochResult, seconds: float, best: _Best, settings: SweepSettings) -> bool:
    """Commit one epoch; returns False when the sweep was cancelled meanwhile."""
    acc, loss = score_of(res, settings.select)
    previous = best.improved
    improved = best.update(acc, loss, res.epoch)
    blob = state.to_checkpoint()
    # an improving epoch's one checkpoint row serves as 'last' and 'best' (written once)
    rec = EpochRecord(epoch=res.epoch, curve=curve_row(res, seconds), best_val_acc=best.acc,
                      best_val_loss=best.loss, best_epoch=best.epoch, last_checkpoint=blob,
                      score=acc,
                      keep_snapshots=settings.keep_snapshots, best_in_last=improved,
                      previous_in_last=previous)

    return transact(ctx.engine, lambda s: attempts.record_epoch(
        s, ctx.engine, trial.id, token, ctx.lease_seconds, rec), core=True)


def record_divergence(ctx: TrialContext, trial: ClaimedTrial, token: str, res: EpochResult,
                      seconds: float) -> bool:
    """The diverged epoch's row (non-finite metrics as NULL) and the final status; closes
    the stage if this was its last trial (``settle_stage``); returns whether the stage's
    advancement is now due."""
    row = curve_row(res, seconds)

    def work(s: Session) -> bool:
        attempts.record_curve(s, ctx.engine, trial.id, token, ctx.lease_seconds, res.epoch,
                                 row)
        attempts.finish(s, ctx.engine, trial.id, token, TrialStatus.DIVERGED.value,
                           f"loss diverged in epoch {res.epoch}")
        return transitions.settle_stage(s, trial.stage_id)

    return transact(ctx.engine, work, core=True)


def finish(ctx: TrialContext, trial_id: int, token: str, status: str,
           error: str | None = None, stage_id: int | None = None) -> bool:
    """The attempt's final status; with ``stage_id``, also closes that stage if this was its
    last trial, and returns whether its advancement is now due (``settle_stage``, in the
    same transaction: no extra round trip per trial)."""
    def work(s: Session) -> bool:
        attempts.finish(s, ctx.engine, trial_id, token, status, error)
        return stage_id is not None and transitions.settle_stage(s, stage_id)

    return transact(ctx.engine, work, core=True)


def run_attempt(ctx: TrialContext, trial_id: int) -> Outcome:
    """Run one attempt of ``trial_id`` to a final status (or hand it back)."""
    token = uuid.uuid4().hex
    claim = claim_trial(ctx, trial_id, token)
    if claim is None:
        return Outcome(trial_id, "noop")
    trial, sweep = claim.trial, claim.sweep
    try:
        keeper = ctx.keeper or LeaseKeeper(ctx.engine, ctx.lease_seconds)
        with keeper.holding(trial.id, token) as lost:
            status, ran, ready = train(ctx, claim, token, lost)
    except LeaseLost as exc:
        log.warning("%s", exc)
        return Outcome(trial.id, "noop", trial.stage_id)
    except models.ModelUnavailable as exc:  # the worker's pre-check missed it: hand back
        log.warning("trial %d: %s on worker %s; handed back for another worker", trial.id,
                    exc, ctx.worker)
        why = f"{exc} on worker {ctx.worker}"
        transact(ctx.engine, lambda s: attempts.hand_back(s, ctx.engine, trial.id, token, why))
        return Outcome(trial.id, "released", trial.stage_id)
    except Exception as exc:
        log.exception("trial %d: attempt %d failed", trial.id, trial.attempts)
        final = _retry_or_fail(ctx, trial, token, sweep.max_attempts, exc)
        if final:
            return Outcome(trial.id, TrialStatus.FAILED.value, trial.stage_id)
        raise
    return Outcome(trial.id, status, trial.stage_id, ran, ready)


def _retry_or_fail(ctx: TrialContext, trial: ClaimedTrial, token: str, max_attempts: int,
                   exc: BaseException) -> bool:
    """Hand the trial back for another attempt, or fail it for good; True if final.

    A crash may be transient (a lost connection, a killed process): the trial
    goes back to ``queued`` and resumes from its checkpoint, until its attempts
    run out.
    """
    error = f"{type(exc).__name__}: {exc}"
    final = trial.attempts >= max_attempts
    try:
        if final:
            finish(ctx, trial.id, token, TrialStatus.FAILED.value,
                   f"attempts exhausted; last error: {error}", stage_id=trial.stage_id)
        else:
            transact(ctx.engine, lambda s: attempts.release(s, ctx.engine, trial.id, token,
                                                               f"attempt failed: {error}"))
    except Exception as inner:  # noqa: BLE001 - the lease reaper recovers the trial
        log.warning("trial %d: could not record the failure: %s", trial.id, inner)
    return final


def train(ctx: TrialContext, claim: Claim, token: str,
          lost: threading.Event) -> tuple[str, int, bool | None]:
    """The epoch loop (``lost``: set once the attempt's lease is lost). Returns (final
    status, epochs trained in this attempt, whether the stage's advancement is due, or None
    if not checked)."""
    trial, sweep = claim.trial, claim.sweep
    # the update rule, schedule etc. (the model's own hyperparameters go to its constructor)
    hyper = Hyper.from_params({k: v for k, v in trial.params.items() if k in SPEC})
    splits = load_splits(ctx, sweep)
    state = resume_or_init(trial, claim.saved, hyper, model_spec(ctx, sweep, trial, splits))
    best = _Best(trial.best_val_acc, trial.best_val_loss, trial.best_epoch)
    settings = SweepSettings.of(sweep.config)
    ran, gate = 0, PruneGate.of(ctx, claim, token, lost)
    while state.epoch < trial.epochs:
        if lost.is_set():
            raise LeaseLost(f"trial {trial.id}: lease lost")
        if ctx.stop_requested():
            transact(ctx.engine, lambda s: attempts.hand_back(
                s, ctx.engine, trial.id, token, "worker stopped; resumable"))
            return "released", ran, None
        if gate and (stop := gate.check(state.epoch)):  # the stage's prune rule
            return stop.status, ran, stop.ready
        started = time.perf_counter()
        res = state.train_epoch(splits.X_train, splits.y_train, splits.X_val, splits.y_val)
        seconds = time.perf_counter() - started
        ran += 1
        if res.diverged:
            return TrialStatus.DIVERGED.value, ran, record_divergence(ctx, trial, token, res,
                                                                      seconds)
        if not record_epoch(ctx, trial, token, state, res, seconds, best, settings):
            finish(ctx, trial.id, token, TrialStatus.CANCELLED.value, "sweep cancelled",
                   stage_id=trial.stage_id)
            return TrialStatus.CANCELLED.value, ran, None
    ready = finish(ctx, trial.id, token, TrialStatus.DONE.value, stage_id=trial.stage_id)
    return TrialStatus.DONE.value, ran, ready
