"""A big launch streams its stage 0: each batch commits and is enqueued before the next is
written (workers start before the launch ends), the stage stays 'launching' (it cannot
advance on a quorum of trials that do not exist yet) until the last batch, a launch
killed midway is completed by `hpsweep resume` with the very same trials, and Redis
carries only each sweep's first ENQUEUE_WINDOW queued trials, the reconciler moving the
window on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from redis import Redis
from sqlalchemy import inspect, text

from coordinator import launch as launch_mod
from coordinator.cli import main
from coordinator.config import load_config
from storage.db import make_engine, transact
from storage.transitions import claim_stage_advance
from tests.support.configs import write_config
from tests.support.db import rows, scalar, wait_for
from tests.support.processes import ROOT
from tests.support.redis_lease import flush_besides_lease
from worker import reconcile as reconcile_mod
from worker.reconcile import reconcile

pytestmark = pytest.mark.integration


def _trial_rows(engine, sweep_id: int) -> list[tuple]:  # type: ignore[no-untyped-def]
    return rows(engine, "SELECT t.idx, t.seed, t.epochs, t.status, p.name, p.value, "
                        "p.value_text FROM trials t JOIN params p ON p.trial_id = t.id "
                        "WHERE t.sweep_id = :s ORDER BY t.idx, p.name", s=sweep_id)


def _stage_status(engine, stage_id: int) -> str:  # type: ignore[no-untyped-def]
    return scalar(engine, "SELECT status FROM stages WHERE id = :s", s=stage_id)


def _params_indexed(engine) -> bool:  # type: ignore[no-untyped-def]
    return "ix_params_name" in {ix["name"] for ix in inspect(engine).get_indexes("params")}


def _write(engine, sql: str, **params) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def test_batches_commit_and_enqueue_before_the_launch_ends(
        tmp_path, db_url, redis_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(launch_mod, "LAUNCH_BATCH", 4)
    monkeypatch.setattr(launch_mod, "FIRST_BATCH", 3)
    monkeypatch.setattr(launch_mod, "DEFER_INDEX_FROM", 8)  # the 8 after the first batch
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=[{"trials": 11, "epochs": 1},
                                                                {"trials": 2, "epochs": 1}]))
    engine, conn = make_engine(db_url), Redis.from_url(redis_url)
    seen: list[tuple[int, str, int, bool]] = []
    send = launch_mod.Enqueuer(engine, conn, "q")

    def on_batch(ids: list[int]) -> None:
        send(ids)
        stage_id = scalar(engine, "SELECT MAX(id) FROM stages")
        # a second process looking now: the committed trials, their jobs, and a stage that
        # cannot advance although every trial it has so far is final
        _write(engine, "UPDATE trials SET status = 'done' WHERE stage_id = :s", s=stage_id)
        advanced = transact(engine, lambda s: claim_stage_advance(s, stage_id))
        seen.append((scalar(engine, "SELECT COUNT(*) FROM trials WHERE stage_id = :s",
                            s=stage_id), _stage_status(engine, stage_id),
                     conn.llen("rq:queue:q"), advanced, _params_indexed(engine)))

    made = launch_mod.create_sweep(engine, cfg, "q", launch_mod.prepare_dataset(cfg),
                                   on_batch=on_batch)
    # the params-by-name index waits for the end of a big launch (built again after it)
    assert seen == [(3, "launching", 3, False, True), (7, "launching", 7, False, False),
                    (11, "launching", 11, False, False)]
    assert _stage_status(engine, made.stage_id) == "running"
    assert _params_indexed(engine)
    assert transact(engine, lambda s: claim_stage_advance(s, made.stage_id))
    engine.dispose()


KILLED_LAUNCH = """
import sys
from redis import Redis
from coordinator import launch
from coordinator.config import load_config
from storage.db import make_engine
launch.LAUNCH_BATCH = 50
launch.DEFER_INDEX_FROM = 1_000
cfg = load_config(sys.argv[1])
launch.launch(make_engine(sys.argv[2]), Redis.from_url(sys.argv[3]), cfg, "q")
"""


@pytest.mark.fault
@pytest.mark.slow
def test_a_launch_killed_midway_is_completed_by_resume_with_the_same_trials(
        tmp_path, db_url, redis_url) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path / "c.yaml", stages=[{"trials": 12_000, "epochs": 1}])
    proc = subprocess.Popen([sys.executable, "-c", KILLED_LAUNCH, str(config), db_url,
                             redis_url], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    engine = make_engine(db_url)  # the launch creates the schema too (race-safely)

    def written() -> int:
        return scalar(engine, "SELECT COUNT(*) FROM trials")

    assert wait_for(lambda: written() >= 500, 180, interval=0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    stage_id, sweep_id = rows(engine, "SELECT id, sweep_id FROM stages")[0]
    assert _stage_status(engine, stage_id) == "launching"
    assert 500 <= written() < 12_000
    assert not _params_indexed(engine)  # dropped for the launch's duration

    res = CliRunner().invoke(main, ["resume", str(sweep_id), "--db", db_url,
                                    "--redis", redis_url])
    assert res.exit_code == 0, res.output
    assert _stage_status(engine, stage_id) == "running"
    assert scalar(engine, "SELECT COUNT(*) FROM trials") == 12_000
    assert _params_indexed(engine)

    whole = launch_mod.create_sweep(engine, load_config(config), "other",
                                    launch_mod.prepare_dataset(load_config(config)))
    assert _trial_rows(engine, sweep_id) == _trial_rows(engine, whole.sweep_id)
    engine.dispose()


def test_redis_carries_a_window_of_queued_trials_that_moves_on(
        tmp_path, db_url, redis_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(launch_mod, "ENQUEUE_WINDOW", 5)
    monkeypatch.setattr(reconcile_mod, "ENQUEUE_WINDOW", 5)
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=[{"trials": 12, "epochs": 1}]))
    engine, conn = make_engine(db_url), Redis.from_url(redis_url)
    made = launch_mod.launch(engine, conn, cfg, "q")
    ids = [i for (i,) in rows(engine, "SELECT id FROM trials ORDER BY idx")]

    def queued_jobs() -> list[str]:
        return [j.decode() for j in conn.lrange("rq:queue:q", 0, -1)]

    assert made.enqueued and queued_jobs() == [f"trial-{i}" for i in ids[:5]]
    assert not reconcile(engine, conn).requeued  # the window is full: nothing to do
    # the first 4 ran (as a worker would leave them) and their jobs left the queue
    _write(engine, "UPDATE trials SET status = 'done' WHERE id IN (:a, :b, :c, :d)",
           a=ids[0], b=ids[1], c=ids[2], d=ids[3])
    conn.ltrim("rq:queue:q", 4, -1)
    assert reconcile(engine, conn).requeued == tuple(ids[5:9])
    assert queued_jobs() == [f"trial-{i}" for i in ids[4:9]]
    # jobs lost with Redis's data: the window is enqueued again
    flush_besides_lease(conn)
    assert reconcile(engine, conn).requeued == tuple(ids[4:9])
    engine.dispose()


def test_a_trial_finished_while_redis_is_asked_is_not_enqueued_again(
        tmp_path, db_url, redis_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The reconciler reads the queued trials, then asks Redis which jobs it holds; a busy
    fleet finishes trials in between, and RQ no longer holds their jobs. Those must not be
    enqueued again (they were, as ~0.8 duplicate jobs per trial at 128 workers)."""
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=[{"trials": 6, "epochs": 1}]))
    engine, conn = make_engine(db_url), Redis.from_url(redis_url)
    launch_mod.launch(engine, conn, cfg, "q")
    ids = [i for (i,) in rows(engine, "SELECT id FROM trials ORDER BY idx")]
    conn.delete("rq:queue:q")  # every job gone from Redis: all six look missing
    for i in ids:
        conn.delete(f"rq:job:trial-{i}")
    asked = reconcile_mod.q.live_job_ids

    def workers_finish_two_meanwhile(c, job_ids):  # type: ignore[no-untyped-def]
        if f"trial-{ids[0]}" in job_ids:  # the question about the trials' jobs
            _write(engine, "UPDATE trials SET status = 'done' WHERE id IN (:a, :b)",
                   a=ids[0], b=ids[3])
        return asked(c, job_ids)

    monkeypatch.setattr(reconcile_mod.q, "live_job_ids", workers_finish_two_meanwhile)
    assert reconcile(engine, conn).requeued == (ids[1], ids[2], ids[4], ids[5])
    assert [j.decode() for j in conn.lrange("rq:queue:q", 0, -1)] == \
        [f"trial-{i}" for i in (ids[1], ids[2], ids[4], ids[5])]
    engine.dispose()
