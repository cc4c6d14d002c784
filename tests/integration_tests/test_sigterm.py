"""Acceptance 4 of issue 6: SIGTERM to a worker mid-trial.

The worker stops at the end of the epoch in flight (no new epoch starts),
hands the trial back as ``queued`` with its checkpoint, and exits 0 within a
few seconds. A second worker, on another "machine", resumes the trial from
that checkpoint and finishes it; the curve has one row per epoch, 1..E, and
its numbers equal an uninterrupted run of the same trial (same Hyper, seed
and dataset split) trained here in-process.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine
from threadpoolctl import threadpool_limits

from storage import trials as trial_store
from storage.db import make_engine, transact
from storage.sweeps import get_sweep
from tests.support.configs import write_blobs, write_config
from tests.support.db import rows, sweep_status, wait_until
from tests.support.processes import stop_all, worker_logs
from worker.dataset_cache import DatasetCache
from worker.nn.hyper import Hyper
from worker.nn.training import TrainState
from worker.trainer import TrialContext, load_splits

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

EPOCHS = 6
FAST = ["--lease-seconds", "3", "--reconcile-every", "0.5"]


def _curve(engine: Engine, trial_id: int) -> list[tuple[int, float, float]]:
    return rows(engine, "SELECT epoch, train_loss, val_loss FROM curves WHERE trial_id = :t "
                        "ORDER BY epoch", t=trial_id)


def _uninterrupted(engine: Engine, trial_id: int) -> list[tuple[int, float, float]]:
    """The trial trained from scratch for all its epochs, in this process."""
    (sweep_id, seed), = rows(engine, "SELECT sweep_id, seed FROM trials WHERE id = :t",
                             t=trial_id)
    sweep = transact(engine, lambda s: get_sweep(s, sweep_id))
    params = transact(engine, lambda s: trial_store.trial_params(s, [trial_id]))[trial_id]
    ctx = TrialContext(engine=engine, worker="test", lease_seconds=3, datasets=DatasetCache())
    splits = load_splits(ctx, sweep)
    state = TrainState.create(Hyper.from_params(params), splits.n_features, splits.n_classes,
                              seed)
    out = []
    with threadpool_limits(limits=1):  # as the workers: a matmul's sums vary with threads
        for _ in range(EPOCHS):
            res = state.train_epoch(splits.X_train, splits.y_train, splits.X_val, splits.y_val)
            out.append((res.epoch, float(res.train_loss), float(res.val_loss)))
    return out


def test_sigterm_hands_the_trial_to_another_worker(db_url, tcp_redis_url, hosts) -> None:
    launcher = hosts("launcher")
    write_blobs(launcher.cwd / "big.npz", n=40000, d=16, classes=4)  # ~0.4 s per epoch
    config = write_config(launcher.cwd / "sweep.yaml", "hosts", dataset="big.npz",
                          stages=[(1, EPOCHS)],
                          hidden=(32, 33), batch_size=8)
    args = ["--db", db_url, "--redis", tcp_redis_url, *FAST]
    engine = make_engine(db_url)  # workers serve an existing database, never create one
    first = hosts("first").worker("first", args)
    workers = [first]
    try:
        name = launcher.launch(config, db_url, tcp_redis_url)
        (trial_id,), = rows(engine, "SELECT id FROM trials")
        wait_until(lambda: len(_curve(engine, trial_id)) >= 2, 60, "two epochs",
                   lambda: worker_logs(workers))
        time.sleep(0.15)  # into the next epoch
        at_signal = len(_curve(engine, trial_id))
        sent = time.monotonic()
        first.sigterm()
        assert first.wait(timeout=10) == 0, worker_logs(workers)
        took = time.monotonic() - sent
        epoch = max(r[0] for r in rows(engine, "SELECT seconds FROM curves"))
        assert took < epoch + 2.0, f"worker took {took:.1f}s to stop (epochs take {epoch:.1f}s)"

        # handed back: queued, resumable from a checkpoint of its last committed epoch, and
        # charged no attempt (a stop is not the trial's failure)
        done_epochs = len(_curve(engine, trial_id))
        assert at_signal <= done_epochs <= at_signal + 1 < EPOCHS
        assert rows(engine, "SELECT status, attempts, worker FROM trials") == [
            ("queued", 0, "first")]
        assert rows(engine, "SELECT max(epoch) FROM checkpoints WHERE trial_id = :t AND "
                            "kind = 'last'", t=trial_id) == [(done_epochs,)]
        assert f"trial {trial_id}: released" in first.text()
        assert sweep_status(engine, name) == "running"

        second = hosts("second").worker("second", args)
        workers.append(second)
        wait_until(lambda: sweep_status(engine, name) == "done", 60, "sweep done",
                   lambda: worker_logs(workers))
        assert rows(engine, "SELECT status, attempts, worker FROM trials") == [
            ("done", 1, "second")]
        assert f"trial {trial_id}: resuming after epoch {done_epochs}" in second.text()
        assert f"trial {trial_id}: done after {EPOCHS - done_epochs} epoch(s)" in second.text()
        curve = _curve(engine, trial_id)
        assert [e for e, _, _ in curve] == list(range(1, EPOCHS + 1))
        assert curve == _uninterrupted(engine, trial_id)
    finally:
        stop_all(workers)
        engine.dispose()
    assert workers[1].proc.returncode == 0, worker_logs(workers)
