"""A worker killed between RQ's dequeue (the job id moved to the queue's intermediate list)
and marking the job started leaves a job that is neither waiting nor started: status
``queued``, in no queue. The chaos test met it (one trial never ran, the sweep stayed
``running``); here the exact state is made by hand, with RQ's own move, and the workers'
reconcilers must put the trial back within seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.configs import write_config
from tests.support.db import sweep_status, wait_for
from tests.support.processes import Fleet
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.fault, pytest.mark.integration]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_job_stranded_between_dequeue_and_start_is_put_back(
        tmp_path: Path, dataset: Path, db: str, redis_server: RedisServer, fleet: Fleet) -> None:
    cfg = write_config(tmp_path / "c.yaml", "blobs", dataset=dataset, stages=[(4, 1)], hidden=32)
    sweep_id = fleet.launch(cfg)
    engine = fleet.engine

    conn = redis_server.client()
    # What RQ's dequeue does first (BLMOVE queue -> intermediate) and a SIGKILL then freezes.
    moved = conn.lmove("rq:queue:hpsweep", "rq:queue:hpsweep:intermediate", "LEFT", "RIGHT")
    assert moved is not None
    assert conn.hget(b"rq:job:" + moved, "status") == b"queued"

    fleet.start()
    assert wait_for(lambda: sweep_status(engine, sweep_id) != "running", 60), fleet.logs()
    assert sweep_status(engine, sweep_id) == "done", fleet.logs()
    assert f"re-enqueued [{moved.decode().split('-')[1]}]" in fleet.logs(tail=10**6)
    assert conn.llen("rq:queue:hpsweep:intermediate") == 0
