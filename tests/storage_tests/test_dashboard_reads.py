"""The dashboard's reads (storage/dashboard.py) on both backends: sampled points keep
the best, best-so-far is the running maximum, top trials rank like ``hpsweep best``,
change tokens move when a trial finishes, checkpoint blobs are never read."""

from __future__ import annotations

from sqlalchemy import Engine, update

from storage import dashboard as reads
from storage import trials as trial_store
from storage.db import make_engine, transact
from storage.models import Trial
from tests.support.db import rows
from tests.support.synthetic_sweep import build


def read(engine, fn, *args):  # type: ignore[no-untyped-def]
    return transact(engine, lambda s: fn(s, *args))


def test_points_sample_keeps_best_and_counts_all(engine: Engine) -> None:
    sweep_id = build(engine, 400)
    final = rows(engine, "SELECT count(*) FROM trials WHERE sweep_id = :s AND status IN "
                 "('done','diverged','failed','cancelled')", s=sweep_id)[0][0]
    full = read(engine, reads.scatter_points, sweep_id)
    assert full["total"] == final and full["step"] == 1 and len(full["points"]) == final
    sampled = read(engine, reads.scatter_points, sweep_id, 50)
    ids = {p[0] for p in sampled["points"]}
    assert sampled["step"] == 8 and len(ids) <= 50 + reads.TOP_ALWAYS
    best = read(engine, trial_store.best_trials, sweep_id, None, 1)[0]
    assert sampled["best"] == best.id and best.id in ids
    statuses = {p[2] for p in full["points"]}
    assert {"done", "diverged", "failed", "cancelled"} <= statuses  # unscored shown apart
    assert all(set(p[5]) == {"learning_rate", "reg", "hidden_size", "dropout"}
               for p in full["points"])


def test_best_so_far_is_the_running_maximum(engine: Engine) -> None:
    sweep_id = build(engine, 300)
    order = rows(engine, "SELECT status, best_val_acc FROM trials WHERE sweep_id = :s AND status "
                 "IN ('done','diverged','failed','cancelled') ORDER BY finished_at, id", s=sweep_id)
    expected, best = [], None
    for n, (status, acc) in enumerate(order, 1):
        if status == "done" and acc is not None and (best is None or acc > best):
            best = acc
            expected.append([n, acc])
    expected.append([len(order), best])
    got = read(engine, reads.best_so_far, sweep_id)
    assert got["finished"] == len(order)
    assert got["steps"] == expected


def test_top_trials_rank_like_hpsweep_best_with_ties_by_loss(engine: Engine) -> None:
    sweep_id = build(engine, 120)
    done = [r[0] for r in rows(engine, "SELECT id FROM trials WHERE sweep_id = :s AND "
                                       "status = 'done' ORDER BY id LIMIT 3", s=sweep_id)]
    with engine.begin() as conn:  # a three-way tie at the top, told apart by val loss
        for tid, loss in zip(done, (0.3, 0.1, 0.2), strict=True):
            conn.execute(update(Trial).where(Trial.id == tid)
                         .values(best_val_acc=1.0, best_val_loss=loss))
    top = read(engine, reads.top_trials, sweep_id, 10)
    best = read(engine, trial_store.best_trials, sweep_id, None, 10)
    assert [t["id"] for t in top] == [b.id for b in best]
    assert [t["id"] for t in top[:3]] == [done[1], done[2], done[0]]


def test_version_moves_when_a_trial_finishes(engine: Engine) -> None:
    sweep_id = build(engine, 40, running=3)
    before = read(engine, reads.sweep_version, sweep_id)
    listing = read(engine, reads.sweeps_version)
    queued = rows(engine, "SELECT id FROM trials WHERE sweep_id = :s AND status = 'queued'",
                  s=sweep_id)[0][0]
    with engine.begin() as conn:
        conn.execute(update(Trial).where(Trial.id == queued)
                     .values(status="done", best_val_acc=0.5))
    assert read(engine, reads.sweep_version, sweep_id) != before
    assert read(engine, reads.sweeps_version) != listing
    assert read(engine, reads.sweep_version, 10**9) is None


def test_trial_detail_lists_checkpoints_without_their_bytes(engine: Engine) -> None:
    sweep_id = build(engine, 30)
    tid = rows(engine, "SELECT trial_id FROM checkpoints ORDER BY trial_id LIMIT 1")[0][0]
    detail = read(engine, reads.trial_detail, tid)
    assert detail["sweep_id"] == sweep_id and detail["checkpoints"]
    assert all(set(c) == {"kind", "epoch", "val_acc", "bytes"} for c in detail["checkpoints"])
    assert detail["checkpoints"][0]["bytes"] == 64
    assert len(detail["curves"]["epoch"]) == detail["epochs"]
    assert read(engine, reads.trial_detail, 10**9) is None


def test_reads_work_on_a_read_only_engine(db_url: str) -> None:
    writer = make_engine(db_url)
    sweep_id = build(writer, 60)
    writer.dispose()
    engine = make_engine(db_url, readonly=True, create=False)
    try:
        listing = read(engine, reads.sweep_list)
        assert listing[0]["id"] == sweep_id and listing[0]["final"] == listing[0]["total"]
        assert listing[0]["flags"] == 1 and listing[0]["best_val_acc"] is not None
        stages = read(engine, reads.stage_rows, sweep_id)
        assert [st["idx"] for st in stages] == [0, 1, 2]
        assert stages[0]["ranges"]["learning_rate"]["scale"] == "log"
        assert sum(sum(st["counts"].values()) for st in stages) == 60
        assert read(engine, reads.ensemble_rows, sweep_id)[0]["gain"] > 0
        assert read(engine, reads.unscored_trials, sweep_id)["counts"]
        assert read(engine, reads.curves, [10**9]) == {10**9: {
            k: [] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                            "ema_val_loss", "ema_val_acc", "lr")}}
    finally:
        engine.dispose()
