"""A crash inside an epoch's transaction (after the checkpoint write, before the commit), and
a crash after the last epoch committed but before ``done``: injected in-process around the
real storage calls, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.orm import Session

from coordinator.config import load_config
from coordinator.launch import create_sweep, prepare_dataset
from storage import attempts
from storage.db import make_engine, transact
from storage.sweeps import trial_ids_by_idx
from tests.support.configs import write_config
from tests.support.db import rows
from tests.support.reference import assert_curves_match, reference_curves
from worker.dataset_cache import DatasetCache
from worker.trainer import TrialContext, run_attempt

pytestmark = [pytest.mark.fault, pytest.mark.integration]

EPOCHS, CRASH_AT = 6, 4


class Injected(RuntimeError):
    """The simulated crash."""


@pytest.fixture
def sweep(tmp_path, dataset, db_url):  # type: ignore[no-untyped-def]
    cfg_path = write_config(tmp_path / "c.yaml", "blobs", dataset=dataset,
                            stages=[(1, EPOCHS)], hidden=64)
    engine = make_engine(db_url)
    cfg = load_config(cfg_path)
    made = create_sweep(engine, cfg, "hpsweep", prepare_dataset(cfg))
    ctx = TrialContext(engine=engine, worker="w", lease_seconds=30.0,
                       datasets=DatasetCache(None))
    first = transact(engine, lambda s: trial_ids_by_idx(s, made.stage_id))[0]
    yield cfg_path, engine, made.sweep_id, first, ctx
    engine.dispose()


def test_crash_between_checkpoint_write_and_commit_leaves_no_trace_of_the_epoch(
        sweep, tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    cfg_path, engine, sweep_id, tid, ctx = sweep
    real = attempts.record_epoch

    def crash_after_write(s, engine, trial_id, token, lease_seconds, rec):  # type: ignore[no-untyped-def]
        live = real(s, engine, trial_id, token, lease_seconds, rec)  # curve row + checkpoints
        if rec.epoch == CRASH_AT:
            assert rows_in(s, trial_id, CRASH_AT) == (1, 1)  # inside the transaction
            raise Injected(f"crash before the commit of epoch {rec.epoch}")
        return live

    monkeypatch.setattr(attempts, "record_epoch", crash_after_write)
    with pytest.raises(Injected):
        run_attempt(ctx, tid)
    assert rows(engine, "SELECT MAX(epoch), COUNT(*) FROM curves") == [(CRASH_AT - 1,
                                                                         CRASH_AT - 1)]
    assert rows(engine, "SELECT kind, epoch FROM checkpoints WHERE kind = 'last'") == [
        ("last", CRASH_AT - 1)]
    assert rows(engine, "SELECT status, attempts, lease_token FROM trials") == [
        ("queued", 1, None)]

    monkeypatch.setattr(attempts, "record_epoch", real)
    with caplog.at_level(logging.INFO, logger="worker.trainer"):
        outcome = run_attempt(ctx, tid)
    assert (outcome.status, outcome.epochs_run) == ("done", EPOCHS - CRASH_AT + 1)
    assert f"resuming after epoch {CRASH_AT - 1}" in caplog.text
    assert rows(engine, "SELECT status, attempts FROM trials") == [("done", 2)]
    assert_curves_match(engine, sweep_id, reference_curves(cfg_path, tmp_path / "ref"))


def rows_in(s: Session, trial_id: int, epoch: int) -> tuple[int, int]:
    from sqlalchemy import text

    q = "SELECT COUNT(*) FROM {} WHERE trial_id = :t AND epoch = :e"
    return (s.execute(text(q.format("curves")), {"t": trial_id, "e": epoch}).scalar(),
            s.execute(text(q.format("checkpoints") + " AND kind = 'last'"),
                      {"t": trial_id, "e": epoch}).scalar())


def test_crash_after_the_last_epoch_commits_before_done_retrains_nothing(
        sweep, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg_path, engine, sweep_id, tid, ctx = sweep
    real = attempts.finish

    def crash_on_done(s, engine, trial_id, token, status, error=None):  # type: ignore[no-untyped-def]
        if status == "done":
            raise Injected("crash before marking the trial done")
        return real(s, engine, trial_id, token, status, error)

    monkeypatch.setattr(attempts, "finish", crash_on_done)
    with pytest.raises(Injected):
        run_attempt(ctx, tid)
    assert rows(engine, "SELECT status, attempts FROM trials") == [("queued", 1)]
    monkeypatch.setattr(attempts, "finish", real)
    outcome = run_attempt(ctx, tid)
    assert (outcome.status, outcome.epochs_run) == ("done", 0)
    assert rows(engine, "SELECT COUNT(*), MAX(epoch) FROM curves") == [(EPOCHS, EPOCHS)]
    assert_curves_match(engine, sweep_id, reference_curves(cfg_path, tmp_path / "ref"))
