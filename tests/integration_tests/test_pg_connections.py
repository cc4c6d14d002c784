"""Many workers on one PostgreSQL: a worker's connection budget, and PgBouncer.

A worker process holds one server connection while idle and at most two while
training (counted in ``pg_stat_activity`` by its ``application_name``). Through a
PgBouncer in transaction mode (``?pgbouncer=1``) more worker processes than the
server lets the database role connect finish a sweep with no connection error and
every trial's curve rows written once.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from storage.db import RETRY_PATIENCE, StorageError, make_engine, transact
from tests.support.configs import write_config
from tests.support.db import assert_sweep_complete, rows, sweep_status, wait_until
from tests.support.pg_activity import ConnectionSampler
from tests.support.pgbouncer import CONNECTION_ERRORS, PgBouncer
from tests.support.processes import stop_all, worker_logs
from tests.support.servers import pg_admin

pytestmark = [pytest.mark.integration]

SERVER_LIMIT = 4


class Sampler(ConnectionSampler):
    """A ``ConnectionSampler`` that measures phases of a test."""

    def peak_over(self, seconds_or_check: float | Callable[[], bool], timeout: float = 90) -> int:
        """Reset, wait (a number of seconds, or until a check holds), return the peak."""
        self.reset()
        if callable(seconds_or_check):
            wait_until(seconds_or_check, timeout, "the phase to end")
        else:
            start = self.samples
            wait_until(lambda: self.samples - start >= 50, timeout, "samples")
            threading.Event().wait(seconds_or_check)
        return self.peak


def test_a_worker_holds_one_connection_idle_and_two_training(pg_url, tcp_redis_url,
                                                            hosts) -> None:
    host = hosts("host")
    app = f"hpsweep-budget-{uuid.uuid4().hex[:8]}"
    config = write_config(host.cwd / "sweep.yaml", "hosts", dataset="spiral",
                          stages=[(3, 40)], batch_size=8)
    worker = host.worker("w", ["--db", pg_url, "--redis", tcp_redis_url,
                               "--lease-seconds", "0.9", "--reconcile-every", "0.1"],
                         env=host.env(PGAPPNAME=app))
    engine = make_engine(pg_url)
    try:
        with Sampler("application_name = %s", (app,)) as sampler:
            wait_until(lambda: "serving queue" in worker.text(), 60, "the worker to serve",
                       lambda: worker_logs([worker]))
            idle_before = sampler.peak_over(2.0)
            name = host.launch(config, pg_url, tcp_redis_url)
            wait_until(lambda: worker.started_trials(), 60, "a trial to start")
            training = sampler.peak_over(lambda: sweep_status(engine, name) != "running")
            idle_after = sampler.peak_over(2.0)  # twenty reconciler passes
        assert_sweep_complete(engine, name)
        peaks = (idle_before, training, idle_after)
        assert idle_before == 1 and 1 <= training <= 2 and idle_after == 1, peaks
    finally:
        stop_all([worker])
        engine.dispose()


@pytest.fixture
def limited_pg(pg_url: str) -> Iterator[tuple[str, str]]:
    """(role, database): a login role that may hold at most SERVER_LIMIT connections (not a
    superuser, so the limit holds) owning a database of its own; dropped after the test.
    (``pg_url`` only for its skip-or-fail when no server answers.)"""
    admin, _ = pg_admin()
    tag = uuid.uuid4().hex[:10]
    role, dbname = f"hpsweep_lim_{tag}", f"hpsweep_test_lim_{tag}"
    admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {SERVER_LIMIT}')
    admin.execute(f'CREATE DATABASE "{dbname}" OWNER "{role}"')
    try:
        yield role, dbname
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


def test_twelve_workers_through_pgbouncer_over_a_limit_of_four(
        pgbouncer_bin, limited_pg, tcp_redis_url, hosts, tmp_path: Path) -> None:
    role, dbname = limited_pg
    host = hosts("host")
    config = write_config(host.cwd / "sweep.yaml", "hosts", dataset="spiral",
                          stages=[(60, 1), (12, 1)], batch_size=16)
    with PgBouncer(tmp_path / "pgbouncer", users=[role], pool_size=SERVER_LIMIT) as bouncer:
        url = bouncer.url(role, dbname)
        with Sampler("datname = %s", (dbname,)) as sampler:
            name = host.launch(config, url, tcp_redis_url)
            pool = host.worker(None, ["--processes", "12", "--burst", "--db", url,
                                      "--redis", tcp_redis_url])
            assert pool.wait(timeout=240) == 0, worker_logs([pool])
            server_peak = sampler.peak
        engine = make_engine(url)
        try:
            wait_until(lambda: sweep_status(engine, name) != "running", 30, "the sweep to end")
            assert_sweep_complete(engine, name)
            assert rows(engine, "SELECT count(*) FROM trials") == [(72,)]
        finally:
            engine.dispose()
    names = set(re.findall(r"worker (\S+) serving queue", pool.text()))
    assert len(names) == 12, pool.text()[-3000:]
    assert not CONNECTION_ERRORS.search(pool.text()), pool.text()[-5000:]
    assert server_peak <= SERVER_LIMIT


def test_without_the_flag_pgbouncer_is_a_clear_error(pgbouncer_bin, pg_url,
                                                     tmp_path: Path) -> None:
    """PgBouncer refuses the startup options a direct connection sends: the error names
    the cause at once instead of being retried for a minute like a lost server."""
    user, dbname = pg_url.split("//")[1].split("@")[0], pg_url.rsplit("/", 1)[1]
    with PgBouncer(tmp_path / "pgbouncer", users=[user]) as bouncer:
        direct = bouncer.url(user, dbname).replace("?pgbouncer=1", "")
        started = time.monotonic()
        for create in (True, False):
            with pytest.raises(StorageError, match="unsupported startup parameter"):
                make_engine(direct, create=create)
        assert time.monotonic() - started < RETRY_PATIENCE / 2


def test_read_only_engines_stay_read_only_through_pgbouncer(pgbouncer_bin, pg_url,
                                                            tmp_path: Path) -> None:
    """Without startup options, a read-only engine begins each transaction READ ONLY; and
    the same statement run many times (psycopg would prepare it) works on any server
    connection."""
    user, dbname = pg_url.split("//")[1].split("@")[0], pg_url.rsplit("/", 1)[1]
    with PgBouncer(tmp_path / "pgbouncer", users=[user], pool_size=2) as bouncer:
        url = bouncer.url(user, dbname)
        writer, reader = make_engine(url), make_engine(url, readonly=True)
        try:
            for i in range(20):
                engine = writer if i % 2 else reader
                assert transact(engine, lambda s, i=i: s.execute(
                    text("SELECT count(*) + :i FROM sweeps"), {"i": i}).scalar()) == i
            with pytest.raises(DBAPIError, match="read-only transaction"):
                transact(reader, lambda s: s.execute(text("CREATE TABLE t (i int)")))
        finally:
            writer.dispose()
            reader.dispose()
