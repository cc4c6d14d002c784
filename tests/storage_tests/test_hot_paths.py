"""The cheap paths of issue 8: ranking in SQL, checkpoints written once per epoch, a fast
wait for SQLite's write lock; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, text

from coordinator.rank import TrialOutcome, rank
from storage import attempts
from storage import checkpoints as checkpoint_store
from storage import trials as trial_store
from storage.attempts import EpochRecord
from storage.db import make_engine, transact
from tests.storage_tests.test_trials import claim, make_sweep
from tests.support.db import rows

pytestmark = pytest.mark.integration


def set_trial(engine: Engine, tid: int, status: str, acc: float | None, loss: float | None) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE trials SET status = :s, best_val_acc = :a, best_val_loss = :l "
                          "WHERE id = :i"), {"s": status, "a": acc, "l": loss, "i": tid})


def test_best_trials_rank_like_coordinator_rank(engine: Engine) -> None:
    sweep, stage, ids = make_sweep(engine, n_trials=8)
    table = [("done", 0.9, 0.5), ("done", 0.9, 0.3), ("done", 0.9, None), ("done", 0.95, 0.9),
             ("diverged", None, None), ("done", None, None), ("failed", 0.99, 0.1),
             ("done", 0.9, 0.3)]
    for tid, (status, acc, loss) in zip(ids, table, strict=True):
        set_trial(engine, tid, status, acc, loss)
    expected = [o.trial_id for o in rank(TrialOutcome(t, st, a, lo)
                                         for t, (st, a, lo) in zip(ids, table, strict=True))
                if o.status == "done" and o.score is not None]
    got = transact(engine, lambda s: trial_store.best_trials(s, sweep, limit=10))
    assert [t.id for t in got] == expected
    assert expected[:3] == [ids[3], ids[1], ids[7]]  # acc, then lower loss, then id
    assert [t.id for t in transact(engine, lambda s: trial_store.best_trials(
        s, sweep, stage, limit=2))] == expected[:2]
    assert got[0].params == {"learning_rate": 0.1, "update_rule": "sgd", "hidden": [4, 3]}
    assert transact(engine, lambda s: trial_store.best_score(s, sweep)) == 0.95


def record(engine: Engine, tid: int, token: str, epoch: int, best_epoch: int,
           improved: bool) -> None:
    rec = EpochRecord(epoch=epoch, curve={"train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0,
                                          "val_acc": 0.5, "lr": 0.1, "seconds": 0.01},
                      best_val_acc=0.5, best_val_loss=1.0, best_epoch=best_epoch,
                      last_checkpoint=b"ck%d" % epoch, score=0.5,
                      best_in_last=improved)
    transact(engine, lambda s: attempts.record_epoch(s, engine, tid, token, 30.0, rec))


def checkpoints(engine: Engine, tid: int) -> list[tuple]:
    return rows(engine, "SELECT kind, epoch, data FROM checkpoints WHERE trial_id = :i "
                        "ORDER BY kind, epoch", i=tid)


def test_an_improving_epoch_writes_one_checkpoint_and_finished_trials_have_both(
        engine: Engine) -> None:
    _, _, ids = make_sweep(engine)
    tid = ids[0]
    claim(engine, tid, "a")
    record(engine, tid, "a", 1, best_epoch=1, improved=True)
    record(engine, tid, "a", 2, best_epoch=2, improved=True)
    assert checkpoints(engine, tid) == [("last", 2, b"ck2")]  # one row stands for both
    record(engine, tid, "a", 3, best_epoch=2, improved=False)
    assert checkpoints(engine, tid) == [("best", 2, b"ck2"), ("last", 3, b"ck3")]  # renamed
    record(engine, tid, "a", 4, best_epoch=2, improved=False)
    record(engine, tid, "a", 4, best_epoch=2, improved=False)  # a retried epoch
    assert checkpoints(engine, tid) == [("best", 2, b"ck2"), ("last", 4, b"ck4")]
    record(engine, tid, "a", 5, best_epoch=5, improved=True)
    assert checkpoints(engine, tid) == [("last", 5, b"ck5")]  # the old best is superseded
    with engine.begin() as conn:
        conn.execute(text("UPDATE trials SET best_epoch = 5 WHERE id = :i"), {"i": tid})
    transact(engine, lambda s: attempts.finish(s, engine, tid, "a", "done"))
    assert checkpoints(engine, tid) == [("best", 5, b"ck5"), ("last", 5, b"ck5")]
    resumable = transact(engine, lambda s: checkpoint_store.resumable(s, tid))
    assert [(k, e) for k, e, _ in resumable] == [("last", 5), ("best", 5)]


def test_finish_keeps_an_older_best(engine: Engine) -> None:
    _, _, ids = make_sweep(engine)
    tid = ids[0]
    claim(engine, tid, "a")
    record(engine, tid, "a", 1, best_epoch=1, improved=True)
    record(engine, tid, "a", 2, best_epoch=1, improved=False)
    with engine.begin() as conn:
        conn.execute(text("UPDATE trials SET best_epoch = 1 WHERE id = :i"), {"i": tid})
    transact(engine, lambda s: attempts.finish(s, engine, tid, "a", "done"))
    assert checkpoints(engine, tid) == [("best", 1, b"ck1"), ("last", 2, b"ck2")]


def test_a_waiting_sqlite_writer_gets_the_lock_when_it_is_released(sqlite_url: str) -> None:
    holder, waiter = make_engine(sqlite_url), make_engine(sqlite_url)
    conn = holder.connect()
    conn.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the write lock is held
    done = threading.Event()

    def write() -> None:
        transact(waiter, lambda s: s.execute(text("DELETE FROM params WHERE 0")))
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    time.sleep(0.3)
    assert not done.is_set()  # waiting, not failing
    conn.rollback()
    conn.close()
    thread.join(10)
    assert done.is_set()
    with waiter.connect() as c:  # the busy timeout is back for every other statement
        assert c.execute(text("PRAGMA busy_timeout")).scalar() >= 30000
    holder.dispose()
    waiter.dispose()
