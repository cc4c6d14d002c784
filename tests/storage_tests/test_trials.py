"""Leases, fenced writes, reaping and stage compare-and-set, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from storage import attempts, transitions
from storage import sweeps as sweep_store
from storage import trials as trial_store
from storage.attempts import EpochRecord, LeaseLost
from storage.db import make_engine, transact
from tests.support.db import rows, scalar

pytestmark = pytest.mark.integration


def make_sweep(engine: Engine, n_trials: int = 3, max_attempts: int = 3) -> tuple[int, int,
               list[int]]:
    def work(s):  # type: ignore[no-untyped-def]
        ds = sweep_store.store_dataset(s, "ab" * 32, "toy", b"x", (1, 1, 2))
        sweep = sweep_store.create_sweep(s, name=sweep_store.unique_sweep_name(s, "s"),
                                         config={"stages": [{"trials": n_trials}]},
                                         dataset_id=ds, seed=0, queue="q", n_stages=1,
                                         max_attempts=max_attempts)
        stage = sweep_store.add_stage(s, sweep, 0, 2, n_trials, {
            "learning_rate": {"low": 1e-4, "high": 1.0, "scale": "log", "integer": False,
                              "choices": None}})
        specs = [sweep_store.TrialSpec(idx=i, seed=i, epochs=2,
                                       params={"learning_rate": 0.1, "update_rule": "sgd",
                                               "hidden": [4, 3]}) for i in range(n_trials)]
        return sweep, stage, sweep_store.add_trials(s, sweep, stage, specs)

    return transact(engine, work)


def claim(engine, tid: int, token: str, lease: float = 30.0):  # type: ignore[no-untyped-def]
    return transact(engine, lambda s: attempts.claim(s, engine, tid, token, "w", lease))


def record(engine: Engine, tid: int, token: str, epoch: int) -> None:
    rec = EpochRecord(epoch=epoch, curve={"train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0,
                                          "val_acc": 0.5, "ema_val_loss": None,
                                          "ema_val_acc": None, "lr": 0.1, "seconds": 0.01},
                      best_val_acc=0.5, best_val_loss=1.0, best_epoch=epoch,
                      last_checkpoint=b"ck%d" % epoch, score=0.5, best_in_last=True)
    transact(engine, lambda s: attempts.record_epoch(s, engine, tid, token, 30.0, rec))


def test_params_round_trip_with_types(engine: Engine) -> None:
    _, _, ids = make_sweep(engine)
    params = transact(engine, lambda s: trial_store.trial_params(s, ids[:1]))[ids[0]]
    assert params == {"learning_rate": 0.1, "update_rule": "sgd", "hidden": [4, 3]}


def test_only_one_claim_wins(engine: Engine) -> None:
    _, _, ids = make_sweep(engine)
    assert claim(engine, ids[0], "a") is not None
    assert claim(engine, ids[0], "b") is None
    assert scalar(engine, "SELECT attempts FROM trials WHERE id = :i", i=ids[0]) == 1
    assert scalar(engine, "SELECT lease_token FROM trials WHERE id = :i", i=ids[0]) == "a"


def test_writes_are_fenced_by_the_lease_token(engine: Engine) -> None:
    _, _, ids = make_sweep(engine)
    claim(engine, ids[0], "a")
    record(engine, ids[0], "a", 1)
    with pytest.raises(LeaseLost):
        record(engine, ids[0], "stale", 2)
    assert rows(engine, "SELECT epoch FROM curves WHERE trial_id = :i", i=ids[0]) == [(1,)]


def test_curve_and_checkpoint_writes_are_idempotent(engine: Engine) -> None:
    _, _, ids = make_sweep(engine)
    claim(engine, ids[0], "a")
    for epoch in (1, 1, 2, 2):
        record(engine, ids[0], "a", epoch)
    assert scalar(engine, "SELECT COUNT(*) FROM curves WHERE trial_id = :i", i=ids[0]) == 2
    def kinds() -> list[tuple]:
        return rows(engine, "SELECT kind, epoch FROM checkpoints WHERE trial_id = :i "
                            "ORDER BY kind", i=ids[0])

    assert kinds() == [("last", 2)]  # replaced in place, not accumulated; it stands for 'best'
    transact(engine, lambda s: attempts.finish(s, engine, ids[0], "a", "done"))
    assert kinds() == [("best", 2), ("last", 2)]  # a finished trial has both


def test_expired_lease_is_reaped_then_reclaimed_and_old_owner_is_fenced(engine: Engine) -> None:
    _, _, ids = make_sweep(engine)
    claim(engine, ids[0], "old", lease=0.3)
    assert claim(engine, ids[0], "new") is None  # lease still live
    time.sleep(0.5)
    requeued, failed = transact(engine, lambda s: attempts.reap_expired(s, engine))
    assert (requeued, failed) == ([ids[0]], [])
    assert claim(engine, ids[0], "new") is not None
    with pytest.raises(LeaseLost):
        record(engine, ids[0], "old", 1)
    assert scalar(engine, "SELECT attempts FROM trials WHERE id = :i", i=ids[0]) == 2


def test_trial_lost_on_every_attempt_ends_failed(engine: Engine) -> None:
    _, _, ids = make_sweep(engine, max_attempts=2)
    for attempt in range(2):
        assert claim(engine, ids[0], f"t{attempt}", lease=0.1) is not None
        time.sleep(0.25)
        transact(engine, lambda s: attempts.reap_expired(s, engine))
    status, error = rows(engine, "SELECT status, error FROM trials WHERE id = :i", i=ids[0])[0]
    assert status == "failed" and "attempts exhausted" in error
    assert claim(engine, ids[0], "t9") is None


def test_stage_advance_cas_succeeds_once_and_only_when_finished(engine: Engine) -> None:
    _, stage, ids = make_sweep(engine, n_trials=2)
    assert not transact(engine, lambda s: transitions.claim_stage_advance(s, stage))
    for tid in ids:
        claim(engine, tid, f"k{tid}")
        transact(engine, lambda s, t=tid: attempts.finish(s, engine, t, f"k{t}", "done"))
    assert transact(engine, lambda s: transitions.claim_stage_advance(s, stage))
    assert not transact(engine, lambda s: transitions.claim_stage_advance(s, stage))


def test_database_clock_is_used_for_leases(engine: Engine) -> None:
    _, _, ids = make_sweep(engine)
    claim(engine, ids[0], "a", lease=100.0)
    expires = scalar(engine, "SELECT lease_expires FROM trials WHERE id = :i", i=ids[0])
    assert abs(expires - (time.time() + 100.0)) < 5.0


def test_sqlite_connections_use_wal_and_busy_timeout(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 30000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_sqlite_on_a_network_filesystem_is_refused(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:

    from storage import db, sqlite

    mounts = f"/dev/vda / ext4 rw 0 0\nserver:/export {tmp_path} nfs4 rw 0 0\n"
    assert sqlite.filesystem_type(tmp_path / "sub", mounts) == "nfs4"
    assert sqlite.filesystem_type(Path("/usr"), mounts) == "ext4"
    monkeypatch.setattr(sqlite, "filesystem_type", lambda path: "nfs4")
    with pytest.raises(db.StorageError, match="PostgreSQL"):
        make_engine(f"sqlite:///{tmp_path}/x.db")
    assert not (tmp_path / "x.db").exists()


def test_postgres_sessions_frozen_in_a_transaction_are_ended(pg_url: str) -> None:
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "1min"
    with make_engine(pg_url, readonly=True).connect() as conn:
        assert conn.execute(text("SHOW default_transaction_read_only")).scalar() == "on"
