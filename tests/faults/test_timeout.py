"""An RQ job timeout mid-epoch: RQ raises ``JobTimeoutException`` (SIGALRM) at an arbitrary
point of the epoch loop; the attempt hands the trial back, the reconciler re-enqueues it and
the next attempt resumes from the last committed checkpoint.

hpsweep's own jobs carry a 24 h timeout (leases, not RQ timeouts, find lost trials); this job
is enqueued by the test with a 1 s timeout (and its database's fingerprint), as an operator
might."""

from __future__ import annotations

from pathlib import Path

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from storage.meta import identity
from tests.support.configs import write_config
from tests.support.db import rows, sweep_status, wait_for
from tests.support.processes import Fleet
from tests.support.reference import assert_curves_match, reference_curves
from tests.support.servers import RedisServer
from worker.queue import RUN_TRIAL, AllowlistJob, origin_kwargs, trial_job_id

pytestmark = [pytest.mark.fault, pytest.mark.integration]


def test_job_timeout_mid_epoch_hands_the_trial_back_and_it_resumes(
        tmp_path: Path, dataset: Path, db: str, redis_server: RedisServer, fleet: Fleet) -> None:
    cfg = write_config(tmp_path / "c.yaml", "blobs", dataset=dataset,
                       stages=[(1, 30)])  # ~3 s: longer than 1 s
    sweep_id = fleet.launch(cfg, "redis://127.0.0.1:1/0")  # Redis "down": the trial waits in the DB
    engine = fleet.engine
    (tid,), = rows(engine, "SELECT id FROM trials")
    queue = Queue("hpsweep", connection=redis_server.client(), serializer=JSONSerializer,
                  job_class=AllowlistJob)
    queue.enqueue(RUN_TRIAL, tid, **origin_kwargs(identity(engine)), job_id=trial_job_id(tid),
                  job_timeout=1)

    worker = fleet.start()
    assert wait_for(lambda: sweep_status(engine, sweep_id) != "running", 60), fleet.logs()
    assert sweep_status(engine, sweep_id) == "done"
    log = worker.text()
    assert "JobTimeoutException" in log, log
    assert rows(engine, "SELECT status, attempts FROM trials") == [("done", 2)], log
    assert "resuming after epoch" in log, log
    assert_curves_match(engine, sweep_id, reference_curves(cfg, tmp_path / "ref"))
