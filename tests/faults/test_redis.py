"""Redis lost: restarted without persistence mid-sweep, or down when the sweep is launched.
The database is the truth; workers' reconcilers put the work back within seconds, and
nobody types ``hpsweep resume``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.support.configs import write_config
from tests.support.db import observer, rows, scalar, sweep_id_of, sweep_status, wait_for
from tests.support.processes import Fleet, run_hpsweep, worker_env
from tests.support.reference import assert_curves_match, reference_curves
from tests.support.servers import RedisServer, free_port

pytestmark = [pytest.mark.fault, pytest.mark.integration]


def _counts(engine: Engine, sweep_id: int) -> dict[str, int]:
    return dict(rows(engine, "SELECT status, COUNT(*) FROM trials WHERE sweep_id = :s "
                             "GROUP BY status", s=sweep_id))


@pytest.mark.slow
def test_redis_restart_without_persistence_mid_sweep_needs_no_resume(
        tmp_path: Path, dataset: Path, db: str, redis_server: RedisServer, fleet: Fleet) -> None:
    cfg = write_config(tmp_path / "c.yaml", "blobs", dataset=dataset, stages=[(12, 5)], hidden=256)
    sweep_id = fleet.launch(cfg)
    engine = fleet.engine
    workers = [fleet.start(), fleet.start()]

    def mid_sweep() -> bool:
        c = _counts(engine, sweep_id)
        return c.get("done", 0) >= 2 and c.get("running", 0) >= 1 and c.get("queued", 0) >= 4

    assert wait_for(mid_sweep, 60), fleet.logs()
    redis_server.client().set("marker", 1)
    redis_server.kill()  # every queued job, registry and worker key is gone
    at_outage = _counts(engine, sweep_id)
    assert at_outage.get("running", 0) >= 1 and at_outage.get("queued", 0) >= 1, at_outage
    time.sleep(1.0)
    redis_server.start()  # same port, empty
    assert not redis_server.client().exists("marker")
    assert wait_for(lambda: sweep_status(engine, sweep_id) != "running", 90), fleet.logs()

    assert sweep_status(engine, sweep_id) == "done", fleet.logs()
    assert all(w.alive() for w in workers), fleet.logs()
    assert "re-enqueued" in "".join(w.text() for w in workers)
    assert_curves_match(engine, sweep_id, reference_curves(cfg, tmp_path / "ref"))
    assert scalar(engine, "SELECT MAX(attempts) FROM trials WHERE sweep_id = :s",
                  s=sweep_id) <= 2


def test_redis_down_at_launch_exits_0_and_workers_enqueue_later(
        tmp_path: Path, dataset: Path, db: str) -> None:
    server = RedisServer(tmp_path / "redis", free_port())  # not started yet
    cfg = write_config(tmp_path / "c.yaml", "blobs", dataset=dataset, stages=[(4, 3)], hidden=64)
    started = time.monotonic()
    out = run_hpsweep("launch", str(cfg), "--db", db, "--redis", server.url,
                      env=worker_env(db, server.url, tmp_path / "cache"))
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - started < 15
    assert "warning" in out.stderr and "workers will" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    engine = observer(db)
    sweep_id = sweep_id_of(engine, out.stdout.strip())
    assert _counts(engine, sweep_id) == {"queued": 4}

    server.start()
    fleet = Fleet(tmp_path, db, server.url, "--lease-seconds", "2", "--reconcile-every", "0.5")
    try:
        w = fleet.start()
        assert wait_for(lambda: sweep_status(engine, sweep_id) != "running", 60), fleet.logs()
        assert sweep_status(engine, sweep_id) == "done"
        assert "re-enqueued [1, 2, 3, 4]" in w.text(), w.text()
        assert_curves_match(engine, sweep_id, reference_curves(cfg, tmp_path / "ref"))
    finally:
        fleet.stop_all()
        server.kill()
