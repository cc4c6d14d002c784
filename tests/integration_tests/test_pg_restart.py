"""Acceptance 3 of issue 6: PostgreSQL drops its connections mid-sweep; workers carry on.

Two ways of losing the server while two workers train a sweep:

- every server-side connection of the test database is closed
  (``pg_terminate_backend``), several times, as a server restart does;
- an outage of a few seconds: connections closed and new ones refused
  (``ALTER DATABASE … ALLOW_CONNECTIONS false``), as while a server restarts.

Pool pre-ping and ``transact``'s retries must reconnect: the sweep ends
``done``, every trial done or diverged, one curve row per epoch, no trial
failed and no worker process died.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.pool import NullPool

from storage.db import make_engine
from tests.support.configs import write_blobs, write_config
from tests.support.db import assert_sweep_complete, rows, sweep_status, wait_until
from tests.support.processes import Host, WorkerProc, stop_all, worker_logs

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

OUTAGE_SECONDS = 3.0
TERMINATE_ALL = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                 "WHERE datname = %s AND pid <> pg_backend_pid()")


def _admin(pg_url: str):  # type: ignore[no-untyped-def]
    """An autocommit psycopg connection to the server's ``postgres`` database."""
    import psycopg

    admin = make_url(pg_url).set(drivername="postgresql", database="postgres")
    return psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True)


def _terminate_backends(pg_url: str) -> int:
    """Close every connection to the test database; returns how many."""
    with _admin(pg_url) as conn:
        return int(conn.execute(TERMINATE_ALL, (make_url(pg_url).database,)).fetchone()[0])


@contextmanager
def _outage(pg_url: str) -> Iterator[None]:
    """The test database as during a server restart: connections dropped, new ones refused."""
    name = make_url(pg_url).database
    with _admin(pg_url) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            conn.execute(TERMINATE_ALL, (name,))
            yield
        finally:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def _start_sweep(pg_url: str, redis_url: str, hosts, lease: float  # type: ignore[no-untyped-def]
                 ) -> tuple[str, list[WorkerProc]]:
    launcher: Host = hosts("launcher")
    write_blobs(launcher.cwd / "blobs.npz", n=6000, d=16, classes=4)
    config = write_config(launcher.cwd / "sweep.yaml", "hosts", dataset="blobs.npz",
                          stages=[(8, 2), (3, 12)],
                          hidden=(16, 48), batch_size=8)  # ~0.1 s per epoch: >2 s of work
    args = ["--db", pg_url, "--redis", redis_url, "--lease-seconds", str(lease),
            "--reconcile-every", "0.5"]
    make_engine(pg_url).dispose()  # workers serve an existing database, never create one
    workers = [hosts(n).worker(n, args) for n in ("w1", "w2")]
    wait_until(lambda: all("serving queue" in w.text() for w in workers), 30,
               "workers serving", lambda: worker_logs(workers))
    return launcher.launch(config, pg_url, redis_url), workers


def _assert_finished_cleanly(engine: Engine, name: str, workers: list[WorkerProc]) -> None:
    wait_until(lambda: sweep_status(engine, name) == "done", 60, f"sweep {name} done",
               lambda: worker_logs(workers))
    assert [w.proc.poll() for w in workers] == [None, None], worker_logs(workers)
    assert_sweep_complete(engine, name)
    assert rows(engine, "SELECT count(*) FROM trials WHERE status = 'failed'") == [(0,)]
    # a trial whose write gave up would have logged its failure with a traceback
    assert not any("Traceback" in w.text() for w in workers), worker_logs(workers)


def test_workers_survive_terminated_connections(pg_url, tcp_redis_url, hosts) -> None:
    # The observer holds no connection between its queries, so every backend a kill closes
    # is a worker's. Whether a worker *logs* a drop depends on whether its connection was
    # busy or idle at that moment (pre-ping replaces idle ones silently): a timing accident,
    # not a promise. The promise: the drops hit the workers, and the sweep finishes anyway,
    # nothing failed, nothing duplicated, no worker died.
    engine = create_engine(pg_url, poolclass=NullPool)
    workers: list[WorkerProc] = []
    try:
        name, workers = _start_sweep(pg_url, tcp_redis_url, hosts, lease=3)
        wait_until(lambda: bool(rows(engine, "SELECT 1 FROM curves LIMIT 1")), 30,
                   "the first epoch", lambda: worker_logs(workers))
        killed = []
        while sweep_status(engine, name) != "done" and len(killed) < 5:
            killed.append(_terminate_backends(pg_url))
            time.sleep(0.2)
        assert sum(1 for k in killed if k > 0) >= 3, f"too few kills mid-sweep: {killed}"
        _assert_finished_cleanly(engine, name, workers)
    finally:
        stop_all(workers)
        engine.dispose()
    assert [w.proc.returncode for w in workers] == [0, 0], worker_logs(workers)


def test_workers_wait_out_a_server_outage(pg_url, tcp_redis_url, hosts) -> None:
    engine = make_engine(pg_url)
    workers: list[WorkerProc] = []
    try:
        # leases outlast the outage: the trials in flight stay with their workers
        name, workers = _start_sweep(pg_url, tcp_redis_url, hosts, lease=12)
        wait_until(lambda: bool(rows(engine, "SELECT 1 FROM curves LIMIT 1")), 30,
                   "the first epoch", lambda: worker_logs(workers))
        with _outage(pg_url):
            time.sleep(OUTAGE_SECONDS)
        _assert_finished_cleanly(engine, name, workers)
        assert any("not currently accepting connections" in w.text() for w in workers)
        ran_twice = rows(engine, "SELECT id, attempts FROM trials WHERE attempts > 1")
        assert not ran_twice, ran_twice
    finally:
        stop_all(workers)
        engine.dispose()
    assert [w.proc.returncode for w in workers] == [0, 0], worker_logs(workers)
