"""Forged and broken jobs in the queue: refused with a clear error, nothing executed, nothing
written, and the worker goes on serving real trials."""

from __future__ import annotations

import json
import os
import pickle
import zlib
from pathlib import Path

import pytest
from rq import Callback, Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import inspect

from storage.db import make_engine
from storage.meta import identity
from tests.support.configs import write_config
from tests.support.db import rows, sweep_status, wait_for
from tests.support.processes import Fleet
from tests.support.reference import assert_curves_match, reference_curves
from tests.support.servers import RedisServer
from worker.queue import RUN_TRIAL, origin_kwargs

pytestmark = [pytest.mark.fault, pytest.mark.integration]


class _Touch:
    """Unpickling this runs ``touch path``: what a pickle payload could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.path}",))


def _forge(server: RedisServer, tmp_path: Path, db: dict[str, str]
           ) -> tuple[dict[str, str], list[Path]]:
    """Enqueue forged jobs the way anyone with Redis write access could (``db``: the job
    arguments naming the workers' database, copied from a real job); job id -> what the
    worker must answer."""
    conn = server.client()
    plain = Queue("hpsweep", connection=conn, serializer=JSONSerializer)  # RQ's own Job class
    sentinels = [tmp_path / f"pwned-{i}" for i in range(5)]
    expected = {}
    job = plain.enqueue("os.system", f"touch {sentinels[0]}", job_id="forged-system")
    expected[job.id] = "PermissionError: function not allowed: 'os.system'"
    job = plain.enqueue("eval", f"__import__('os').system('touch {sentinels[1]}')",
                        job_id="forged-eval")
    expected[job.id] = "PermissionError: function not allowed: 'eval'"
    job = plain.enqueue(RUN_TRIAL, 1, job_id="forged-callback",
                        on_success=Callback("os.system"), on_failure=Callback("os.system"))
    expected[job.id] = "PermissionError: callback not allowed"
    for jid, data in (("forged-pickle", pickle.dumps(_Touch(sentinels[2]))),
                      ("forged-garbage", b"\x00\xff not json {")):
        job = plain.enqueue(RUN_TRIAL, 1, job_id=jid)
        conn.hset(job.key, "data", data)  # the payload replaced behind RQ's back
        expected[jid] = "DeserializationError"
    job = plain.enqueue(RUN_TRIAL, 999_999, **db, job_id="forged-unknown-trial")
    expected[job.id] = "LookupError: unknown trial 999999"
    job = plain.enqueue(RUN_TRIAL, 1, job_id="forged-no-fingerprint")
    expected[job.id] = "PermissionError: job carries no valid database fingerprint"
    job = plain.enqueue(RUN_TRIAL, 1, fingerprint=1, database=[], job_id="forged-bad-fingerprint")
    expected[job.id] = "PermissionError: job carries no valid database fingerprint"
    job = plain.enqueue(RUN_TRIAL, 1, fingerprint="f" * 32, database="a\nerror: injected",
                        job_id="forged-log-injection")  # another database, unprintable name
    expected[job.id] = "PermissionError: job belongs to database 'a\\nerror: injected'"
    job = plain.enqueue(RUN_TRIAL, 1, job_id="forged-kwargs-list")
    conn.hset(job.key, "data", zlib.compress(json.dumps([RUN_TRIAL, None, [1], [2]]).encode()))
    expected[job.id] = "must be a mapping"
    job = plain.enqueue(RUN_TRIAL, "1; DROP TABLE trials", job_id="forged-string-id")
    expected[job.id] = "TypeError: run_trial takes an integer trial id"
    return expected, sentinels


def _answer(server: RedisServer, job_id: str) -> tuple[str | None, str]:
    conn = server.client()
    status = conn.hget(Job.key_for(job_id), "status")
    try:
        result = Job.fetch(job_id, connection=conn, serializer=JSONSerializer).latest_result()
    except Exception as exc:  # noqa: BLE001 - a payload RQ cannot read back either
        return (status.decode() if status else None), f"(unreadable: {exc})"
    text = result.exc_string or "" if result is not None else ""
    return (status.decode() if status else None), text


def test_forged_and_broken_jobs_are_refused_and_the_worker_serves_on(
        tmp_path: Path, dataset: Path, db: str, redis_server: RedisServer, fleet: Fleet) -> None:
    engine = make_engine(db)  # a worker serves an existing database, never creates one
    worker = fleet.start()
    expected, sentinels = _forge(redis_server, tmp_path, origin_kwargs(identity(engine)))
    assert wait_for(lambda: all(_answer(redis_server, j)[0] in ("failed", "finished")
                                for j in expected), 30), (fleet.logs(),
                                                          [_answer(redis_server, j)
                                                           for j in expected])
    for jid, error in expected.items():
        status, text = _answer(redis_server, jid)
        assert status == "failed", (jid, status, text)
        assert error in text or error in worker.text(), (jid, text, worker.text()[-3000:])
    assert not any(p.exists() for p in sentinels)
    written = {t: rows(engine, f"SELECT COUNT(*) FROM {t}")[0][0]
               for t in inspect(engine).get_table_names()
               if t not in ("hpsweep_meta", "alembic_version")}  # the schema's own rows
    assert written and set(written.values()) == {0}, written
    assert worker.alive(), worker.text()

    cfg = write_config(tmp_path / "c.yaml", "blobs", dataset=dataset, stages=[(3, 2)], hidden=64)
    sweep_id = fleet.launch(cfg)
    assert wait_for(lambda: sweep_status(engine, sweep_id) == "done", 60), worker.text()
    assert_curves_match(engine, sweep_id, reference_curves(cfg, tmp_path / "ref"))
    assert worker.alive() and "RQ's loop quit" not in worker.text()
    assert not any(p.exists() for p in sentinels)
