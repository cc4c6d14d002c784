"""Eight processes writing one SQLite file through the storage API at once: claims, fenced
epoch rows with checkpoints, heartbeats and final statuses. No "database is locked", exact
row counts, and an intact file."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage import attempts
from storage import sweeps as sweep_store
from storage import trials as trial_store
from storage.attempts import EpochRecord
from storage.db import make_engine, transact
from tests.support.db import rows, scalar

pytestmark = [pytest.mark.fault, pytest.mark.integration, pytest.mark.slow]

PROCESSES, TRIALS_EACH, EPOCHS = 8, 10, 10


def _make_sweep(engine: Engine) -> list[int]:
    n = PROCESSES * TRIALS_EACH

    def work(s):  # type: ignore[no-untyped-def]
        ds = sweep_store.store_dataset(s, "cd" * 32, "toy", b"x", (1, 1, 2))
        sweep = sweep_store.create_sweep(s, name="eight", config={"stages": [{"trials": n}]},
                                         dataset_id=ds, seed=0, queue="q", n_stages=1,
                                         max_attempts=3)
        stage = sweep_store.add_stage(s, sweep, 0, EPOCHS, n, {})
        specs = [sweep_store.TrialSpec(idx=i, seed=i, epochs=EPOCHS,
                                       params={"learning_rate": 0.1}) for i in range(n)]
        return sweep_store.add_trials(s, sweep, stage, specs)

    return transact(engine, work)


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.n += 1


def _epoch(s: Session, engine: Engine, tid: int, token: str, rec: EpochRecord) -> None:
    """Read, then write, in one transaction (as the reaper does): a deferred BEGIN would
    get SQLITE_BUSY here at once, without waiting for the busy timeout."""
    trial_store.trial_best(s, tid)
    attempts.record_epoch(s, engine, tid, token, 30.0, rec)


def _writer(url: str, trial_ids: list[int], barrier, out) -> None:  # type: ignore[no-untyped-def]
    """One process: claim its trials and write every epoch as a worker does."""
    retries = _Count()
    logging.getLogger("storage.db").addHandler(retries)
    errors: list[str] = []
    engine = make_engine(url)
    pragmas = rows(engine, "PRAGMA journal_mode") + rows(engine, "PRAGMA foreign_keys")
    blob = os.urandom(64 * 1024)  # a checkpoint-sized write
    barrier.wait(timeout=60)  # all eight start together
    for tid in trial_ids:
        token = f"{os.getpid()}-{tid}"
        try:
            assert transact(engine, lambda s, t=tid, k=token: attempts.claim(
                s, engine, t, k, f"w{os.getpid()}", 30.0)) is not None
            for epoch in range(1, EPOCHS + 1):
                rec = EpochRecord(epoch=epoch, curve={"train_loss": 1.0 / epoch, "train_acc": 0.5,
                                                      "val_loss": 1.0 / epoch, "val_acc": 0.5,
                                                      "lr": 0.1, "seconds": 0.01},
                                  best_val_acc=0.5, best_val_loss=1.0 / epoch, best_epoch=epoch,
                                  last_checkpoint=blob, score=0.5, best_in_last=True,
                                  previous_in_last=None if epoch == 1 else True)
                transact(engine, lambda s, t=tid, k=token, r=rec: _epoch(s, engine, t, k, r))
                transact(engine, lambda s, t=tid, k=token: attempts.renew_lease(
                    s, engine, t, k, 30.0))
            transact(engine, lambda s, t=tid, k=token: attempts.finish(s, engine, t, k, "done"))
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on any
            errors.append(f"trial {tid}: {type(exc).__name__}: {exc}")
    engine.dispose()
    out.put((errors, retries.n, pragmas))


def test_eight_processes_write_one_sqlite_file_without_lock_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = make_engine(url)
    ids = _make_sweep(engine)
    ctx = mp.get_context("spawn")  # fresh interpreters: nothing inherited across fork()
    out = ctx.Queue()
    barrier = ctx.Barrier(PROCESSES)
    procs = [ctx.Process(target=_writer, args=(url, ids[p::PROCESSES], barrier, out))
             for p in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    errors = [e for errs, _, _ in results for e in errs]
    assert errors == [], errors[:5]
    assert sum(n for _, n, _ in results) == 0, "transact had to retry a busy database"
    assert {tuple(p) for _, _, p in results} == {(("wal",), (1,))}
    assert scalar(engine, "SELECT COUNT(*) FROM curves") == PROCESSES * TRIALS_EACH * EPOCHS
    assert rows(engine, "SELECT kind, COUNT(*) FROM checkpoints GROUP BY kind ORDER BY kind") == [
        ("best", PROCESSES * TRIALS_EACH), ("last", PROCESSES * TRIALS_EACH)]
    assert rows(engine, "SELECT status, attempts, COUNT(*) FROM trials GROUP BY status, "
                        "attempts") == [("done", 1, PROCESSES * TRIALS_EACH)]
    assert rows(engine, "SELECT trial_id, COUNT(*) FROM curves GROUP BY trial_id "
                        "HAVING COUNT(*) <> :e", e=EPOCHS) == []
    assert rows(engine, "PRAGMA integrity_check") == [("ok",)]
    engine.dispose()
