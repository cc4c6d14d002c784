"""Issue 7 acceptance #4: ``hpsweep cancel`` on a running 2-worker sweep leaves no
trial running or queued within 30 s, no new stage, and the workers idle."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Worker

from storage.db import make_engine
from tests.coordinator_tests.finished_sweep import cli
from tests.support.configs import write_config
from tests.support.db import rows, scalar, wait_for
from tests.support.processes import Fleet
from worker import queue as q

pytestmark = [pytest.mark.integration, pytest.mark.fault]

EPOCHS = 400  # long trials: both workers are mid-trial when the cancel comes


def idle_workers(conn: Redis) -> list[str]:
    return [w.name for w in Worker.all(connection=conn) if w.get_state() == "idle"]


def test_cancel_stops_a_running_two_worker_sweep(tmp_path: Path, db_url: str,
                                                 redis_url: str) -> None:
    cfg = write_config(tmp_path / "c.yaml", stages=[{"trials": 12, "epochs": EPOCHS},
                                                    {"trials": 2, "epochs": 1}])
    launched = cli("launch", str(cfg), "--db", db_url, "--redis", redis_url)
    assert launched.exit_code == 0, launched.output
    name = launched.output.strip().splitlines()[-1]
    engine = make_engine(db_url)
    conn = Redis.from_url(redis_url)
    fleet = Fleet(tmp_path, db_url, redis_url, "--log-level", "warning", "--reconcile-every", "1")
    procs = [fleet.start() for _ in range(2)]
    try:
        assert wait_for(lambda: scalar(engine, "SELECT COUNT(*) FROM trials WHERE status = "
                                               "'running'") == 2, timeout=30), "never 2 running"
        assert wait_for(lambda: scalar(engine, "SELECT COUNT(*) FROM curves") >= 4, timeout=10)
        started = time.monotonic()
        res = cli("cancel", name, "--db", db_url, "--redis", redis_url)
        assert res.exit_code == 0 and f"cancelled {name}" in res.output, res.output

        def settled() -> bool:
            return scalar(engine, "SELECT COUNT(*) FROM trials WHERE status IN "
                                  "('running', 'queued')") == 0
        assert wait_for(settled, timeout=30), rows(engine, "SELECT id, status FROM trials")
        assert time.monotonic() - started < 30
        assert wait_for(lambda: len(idle_workers(conn)) == 2, timeout=10), [
            (w.name, w.get_state()) for w in Worker.all(connection=conn)]
        assert all(p.alive() for p in procs)  # idle, not dead
        assert q.make_queue(conn, "hpsweep").count == 0  # queued jobs dropped

        assert scalar(engine, "SELECT status FROM sweeps") == "cancelled"
        assert rows(engine, "SELECT idx, status FROM stages") == [(0, "cancelled")]
        stopped = rows(engine, """SELECT t.id, COUNT(c.epoch), MAX(c.epoch) FROM trials t
                                  JOIN curves c ON c.trial_id = t.id
                                  WHERE t.status = 'cancelled' GROUP BY t.id""")
        assert len(stopped) >= 2  # the two running trials stopped, mid-way, at an epoch end
        for tid, n, last in stopped:
            assert n == last < EPOCHS
            assert scalar(engine, "SELECT MAX(epoch) FROM checkpoints WHERE trial_id = :t "
                                  "AND kind = 'last'", t=tid) == last
        assert scalar(engine, "SELECT COUNT(*) FROM trials WHERE status NOT IN "
                              "('done', 'cancelled')") == 0
    finally:
        fleet.stop_all()
        conn.close()
