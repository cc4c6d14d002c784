"""A trial whose worker is SIGKILLed on every attempt ends ``failed`` after ``max_attempts``,
is never enqueued again, and does not block its stage."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.configs import write_config
from tests.support.db import rows, scalar, sweep_status, wait_for
from tests.support.processes import Fleet
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.fault, pytest.mark.integration, pytest.mark.slow]

MAX_ATTEMPTS = 3


def test_trial_killed_on_every_attempt_fails_and_the_sweep_goes_on(
        tmp_path: Path, dataset: Path, db: str, redis_server: RedisServer, fleet: Fleet) -> None:
    cfg = write_config(tmp_path / "c.yaml", "blobs", dataset=dataset, stages=[(2, 8), (2, 2)],
                       max_attempts=MAX_ATTEMPTS)
    sweep_id = fleet.launch(cfg)
    engine = fleet.engine
    victim = scalar(engine, "SELECT MIN(id) FROM trials")

    def attempt_running(k: int) -> bool:
        return rows(engine, "SELECT status, attempts FROM trials WHERE id = :t",
                    t=victim) == [("running", k)]

    worker = fleet.start()
    for k in range(1, MAX_ATTEMPTS + 1):  # one worker at a time: it runs the victim, dies
        assert wait_for(lambda k=k: attempt_running(k), 60), fleet.logs()
        worker.kill()
        worker = fleet.start()
    assert wait_for(lambda: sweep_status(engine, sweep_id) != "running", 60), fleet.logs()

    assert sweep_status(engine, sweep_id) == "done"
    status, attempts, error = rows(engine, "SELECT status, attempts, error FROM trials "
                                           "WHERE id = :t", t=victim)[0]
    assert (status, attempts) == ("failed", MAX_ATTEMPTS)
    assert "attempts exhausted" in error
    per_stage = rows(engine, """SELECT s.idx, t.status, COUNT(*) FROM trials t
                                JOIN stages s ON s.id = t.stage_id
                                GROUP BY s.idx, t.status ORDER BY s.idx, t.status""")
    assert per_stage == [(0, "done", 1), (0, "failed", 1), (1, "done", 2)]
    # Never enqueued again: a few reconcile passes later, no job and no new attempt.
    time.sleep(1.5)
    assert worker.alive()
    queued = redis_server.client().lrange("rq:queue:hpsweep", 0, -1)
    assert f"trial-{victim}".encode() not in queued
    status_in_rq = redis_server.client().hget(f"rq:job:trial-{victim}", "status")
    assert status_in_rq != b"queued"
    assert scalar(engine, "SELECT attempts FROM trials WHERE id = :t", t=victim) == MAX_ATTEMPTS
    assert f"trial {victim}: start" not in worker.text()
