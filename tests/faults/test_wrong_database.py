"""A worker serves only its own database (DESIGN principle 7).

The issue's reproduction: ``launch`` in one folder and ``worker --burst`` in another, both
with the default relative ``sqlite:///hpsweep.db``, on one Redis. The worker must create
no database, take no job, and exit non-zero; a worker in the right folder then finishes the
sweep. And a worker of another *existing* hpsweep database leaves the job where it was.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import create_engine, inspect, make_url, text

from storage.db import make_engine
from storage.meta import describe, identity
from tests.support.configs import write_config
from tests.support.db import assert_curves_complete, observer, rows, sweep_status, wait_for
from tests.support.processes import ROOT, Fleet, run_hpsweep, worker_env
from tests.support.servers import RedisServer, postgres_db
from worker.queue import RUN_TRIAL, AllowlistJob, job_origin, trial_job_id

pytestmark = [pytest.mark.fault, pytest.mark.integration]


def run(args: list[str], cwd: Path, redis_url: str, db: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """An hpsweep command as a user runs it in ``cwd``; ``db`` None: no --db, no $HPSWEEP_DB."""
    env = worker_env(db or "", redis_url, cwd.parent / "cache")
    if db is None:
        env.pop("HPSWEEP_DB")
    return run_hpsweep(*args, cwd=cwd, env=env, timeout=timeout)


def queue_state(conn: Redis, name: str = "hpsweep") -> dict[str, object]:
    """Everything RQ knows about the queue's jobs: order, statuses, registries."""
    queue = Queue(name, connection=conn, serializer=JSONSerializer, job_class=AllowlistJob)
    ids = queue.job_ids
    return {
        "queued": ids,
        "statuses": [conn.hget(f"rq:job:{jid}", "status") for jid in ids],
        "intermediate": conn.lrange(queue.intermediate_queue_key, 0, -1),
        "started": StartedJobRegistry(queue=queue).get_job_ids(),
        "failed": FailedJobRegistry(queue=queue).get_job_ids(),
    }


def test_worker_in_another_folder_creates_nothing_takes_nothing_and_exits_2(
        tmp_path: Path, redis_server: RedisServer) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    cfg = write_config(tmp_path / "c.yaml")  # 6 + 3 one-to-three-epoch spiral trials
    out = run(["launch", str(cfg)], here, redis_server.url)
    assert out.returncode == 0, out.stderr
    conn = redis_server.client()
    before = queue_state(conn)
    assert len(before["queued"]) == 6  # type: ignore[arg-type]

    out = run(["worker", "--burst"], there, redis_server.url)
    assert out.returncode == 2, out.stderr
    assert f"no such file: {there / 'hpsweep.db'}" in out.stderr
    assert list(there.iterdir()) == []  # no database, no -wal, nothing
    assert queue_state(conn) == before
    engine = observer(f"sqlite:///{here / 'hpsweep.db'}")
    assert rows(engine, "SELECT DISTINCT status, attempts FROM trials") == [("queued", 0)]

    out = run(["worker", "--burst"], here, redis_server.url)
    assert out.returncode == 0, out.stderr
    assert rows(engine, "SELECT status FROM sweeps") == [("done",)]
    assert_curves_complete(engine)


def test_worker_pool_on_a_missing_database_exits_2_and_creates_nothing(
        tmp_path: Path, redis_server: RedisServer) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    out = run(["worker", "--processes", "2", "--burst"], folder, redis_server.url)
    assert out.returncode == 2, out.stderr
    assert "no such file" in out.stderr
    assert list(folder.iterdir()) == []


def test_worker_on_postgres_without_hpsweep_tables_exits_2_and_creates_none(
        pg_url: str, tmp_path: Path, redis_server: RedisServer) -> None:
    out = run(["worker", "--burst"], tmp_path, redis_server.url, db=pg_url)
    assert out.returncode == 2, out.stderr
    assert "not an hpsweep database" in out.stderr
    plain = create_engine(pg_url)  # not make_engine: that would create the schema
    assert inspect(plain).get_table_names() == []
    plain.dispose()


@pytest.fixture
def other_db(request: pytest.FixtureRequest, db: str, tmp_path: Path) -> Iterator[str]:
    """A second, existing hpsweep database on the backend of ``db`` (PostgreSQL URLs carry
    a password, which the server's trust authentication ignores and messages must mask)."""
    if not db.startswith("postgresql"):
        url = f"sqlite:///{tmp_path / 'other.db'}"
        make_engine(url).dispose()
        yield url
        return
    with postgres_db() as plain:
        url = plain.replace("@", ":s3cret@", 1)
        make_engine(url).dispose()
        yield url


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_worker_of_another_database_leaves_the_job_queued_and_exits_2(
        db, other_db, tmp_path, redis_server, fleet: Fleet) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path / "c.yaml")
    out = run(["launch", str(cfg), "--db", db], ROOT, redis_server.url)
    assert out.returncode == 0, out.stderr
    conn = redis_server.client()
    before = queue_state(conn)
    assert len(before["queued"]) == 6  # type: ignore[arg-type]
    ours = identity(make_engine(db))
    assert {job_origin(Queue("hpsweep", connection=conn, serializer=JSONSerializer,
                             job_class=AllowlistJob).fetch_job(j)) for j in before["queued"]
            } == {ours}  # type: ignore[union-attr]

    wrong = run(["worker"], ROOT, redis_server.url, db=other_db, timeout=60)  # not --burst
    assert wrong.returncode == 2, wrong.stderr
    lines = [ln for ln in wrong.stderr.splitlines() if "belongs to database" in ln]
    assert len(lines) == 1, wrong.stderr
    assert "Traceback" not in wrong.stderr
    line = lines[0]
    assert describe(make_url(db)) in line and describe(make_url(other_db)) in line, line
    assert "trial-1" in line and "--db" in line and "$HPSWEEP_DB" in line
    assert "s3cret" not in wrong.stderr
    assert queue_state(conn) == before  # same jobs, same order, queued, in no registry
    engine = observer(db)
    assert rows(engine, "SELECT DISTINCT status, attempts FROM trials") == [("queued", 0)]
    assert rows(observer(other_db), "SELECT COUNT(*) FROM trials") == [(0,)]

    right = fleet.start("--burst")
    assert right.proc.wait(timeout=120) == 0, right.text()
    assert rows(engine, "SELECT status FROM sweeps") == [("done",)]
    assert_curves_complete(engine)


def test_job_without_fingerprint_is_refused_not_lost(
        tmp_path: Path, db: str, redis_server: RedisServer, fleet: Fleet) -> None:
    """Jobs of an older hpsweep (ids only): refused, and the trial still runs exactly once."""
    cfg = write_config(tmp_path / "c.yaml", stages=[{"trials": 4, "epochs": 2}])
    out = run(["launch", str(cfg), "--db", db], ROOT, "redis://127.0.0.1:1/0")  # Redis "down"
    assert out.returncode == 0, out.stderr
    engine = observer(db)
    queue = Queue("hpsweep", connection=redis_server.client(), serializer=JSONSerializer)
    for (tid,) in rows(engine, "SELECT id FROM trials"):
        queue.enqueue(RUN_TRIAL, tid, job_id=trial_job_id(tid))  # as an older version did
    worker = fleet.start()
    assert wait_for(lambda: sweep_status(engine, 1) == "done", 60), worker.text()
    assert "no valid database fingerprint" in worker.text()
    assert worker.alive(), worker.text()
    assert rows(engine, "SELECT DISTINCT status, attempts FROM trials") == [("done", 1)]
    assert_curves_complete(engine)


def test_database_of_an_older_version_gets_a_fingerprint_from_resume(
        tmp_path: Path, db: str, redis_server: RedisServer, fleet: Fleet) -> None:
    cfg = write_config(tmp_path / "c.yaml", stages=[{"trials": 3, "epochs": 1}])
    out = run(["launch", str(cfg), "--db", db], ROOT, "redis://127.0.0.1:1/0")
    assert out.returncode == 0, out.stderr
    with make_engine(db).begin() as c:  # as written before fingerprints (and Alembic)
        c.execute(text("DROP TABLE hpsweep_meta"))
        c.execute(text("DROP TABLE alembic_version"))
    status = run(["status", "--db", db], ROOT, redis_server.url)
    assert status.returncode == 2 and "run `hpsweep db upgrade`" in status.stderr, status.stderr
    looker = make_engine(db, readonly=True, any_revision=True)
    assert "hpsweep_meta" not in inspect(looker).get_table_names()  # looking: no write

    out = run(["resume", "t", "--db", db], ROOT, redis_server.url)
    assert out.returncode == 0, out.stderr
    (fingerprint,), = rows(observer(db), "SELECT value FROM hpsweep_meta")
    queue = Queue("hpsweep", connection=redis_server.client(), serializer=JSONSerializer,
                  job_class=AllowlistJob)
    origins = {job_origin(queue.fetch_job(j)) for j in queue.job_ids}  # type: ignore[arg-type]
    assert {o.fingerprint for o in origins if o} == {fingerprint} and None not in origins
    fleet.start("--burst")
    assert wait_for(lambda: sweep_status(observer(db), 1) == "done", 60), fleet.logs()



def test_run_whose_workers_all_meet_another_databases_jobs_exits_2_instead_of_looping(
        tmp_path: Path, redis_server: RedisServer) -> None:
    # Folder A's sweep waits in the queue; `run` in folder B shares that Redis database.
    # Every worker of B's run takes one of A's jobs first, hands it back and exits 2; the
    # run must not restart them for ever (each would exit 2 again), but say so and exit 2.
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    cfg = write_config(tmp_path / "c.yaml")
    other_db = redis_server.url.rsplit("/", 1)[0] + "/1"
    assert run(["launch", str(cfg)], a, other_db).returncode == 0  # A's trials 1..6 elsewhere
    assert run(["launch", str(cfg)], a, redis_server.url).returncode == 0  # 7..12 here
    waiting = queue_state(redis_server.client())["queued"]

    out = run(["run", str(cfg), "--workers", "2"], b, redis_server.url, timeout=180)
    assert out.returncode == 2, out.stderr
    assert "every worker process stopped on bad input" in out.stderr, out.stderr
    assert "belongs to database" in out.stderr, out.stderr
    assert queue_state(redis_server.client())["queued"][:len(waiting)] == waiting  # A's intact
