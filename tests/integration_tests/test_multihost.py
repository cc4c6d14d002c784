"""Acceptance 1 and 2 of issue 6: workers on three "machines" finish a 2-stage sweep.

Each worker runs from its own folder with its own HOME and TMPDIR (so its own
dataset cache) and an environment without any ``HPSWEEP_*`` variable; the
workers share nothing but a Redis URL over TCP and a database URL. The user's
``.npz`` dataset exists only in the launching folder, and is deleted right
after the launch: workers can only get it from the database.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

import pytest

from storage.db import make_engine
from tests.support.configs import write_blobs, write_config
from tests.support.db import assert_sweep_complete, rows, sweep_status, wait_until
from tests.support.processes import stop_all, worker_logs

pytestmark = [pytest.mark.integration]

FAST = ["--lease-seconds", "3", "--reconcile-every", "0.5"]
NAMES = ("alpha", "bravo", "charlie")


def test_three_hosts_finish_a_two_stage_sweep(db_url, tcp_redis_url, hosts) -> None:
    launcher = hosts("launcher")
    data = write_blobs(launcher.cwd / "blobs.npz", n=900, d=16, classes=4)
    config = write_config(launcher.cwd / "sweep.yaml", "hosts", dataset="blobs.npz",
                          stages=[(30, 1), (6, 3)])
    machines = [hosts(n) for n in NAMES]
    args = ["--db", db_url, "--redis", tcp_redis_url, *FAST]
    engine = make_engine(db_url)  # workers serve an existing database, never create one
    workers = [m.worker(n, args) for m, n in zip(machines, NAMES, strict=True)]
    try:
        wait_until(lambda: all("serving queue" in w.text() for w in workers), 30,
                   "three workers serving", lambda: worker_logs(workers))
        name = launcher.launch(config, db_url, tcp_redis_url)
        data.unlink()  # from now on the dataset exists only in the database
        wait_until(lambda: sweep_status(engine, name) == "done", 60, f"sweep {name} done",
                   lambda: worker_logs(workers))
        assert_sweep_complete(engine, name)
        workers_seen = {w for (w,) in rows(engine, "SELECT DISTINCT worker FROM trials")}
        assert workers_seen == set(NAMES)
        (sha,), = rows(engine, "SELECT sha256 FROM datasets")
        _assert_each_host_cached_the_dataset(machines, sha)
        _assert_one_log_line_per_trial_start_and_end(workers, engine)
    finally:
        stop_all(workers)
        engine.dispose()
    assert [w.proc.returncode for w in workers] == [0, 0, 0], worker_logs(workers)
    assert not any("Traceback" in w.text() for w in workers), worker_logs(workers)
    password = urlsplit(tcp_redis_url).password
    assert password and not any(password in w.text() for w in workers)  # URLs logged masked


def _assert_each_host_cached_the_dataset(machines, sha: str) -> None:  # type: ignore[no-untyped-def]
    for m in machines:
        cached = m.cache / f"{sha}.npz"
        assert cached.is_file(), f"{m.root.name} has no cached dataset in {m.cache}"
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha
        assert not list(m.cwd.rglob("*.npz")), "a worker's folder holds a dataset file"


def _assert_one_log_line_per_trial_start_and_end(workers, engine) -> None:  # type: ignore[no-untyped-def]
    started = [t for w in workers for t in w.started_trials()]
    ended = [t for w in workers for t, _ in w.ended_trials()]
    assert sorted(started) == sorted(ended)
    all_ids = {t for (t,) in rows(engine, "SELECT id FROM trials")}
    assert set(started) == all_ids
    final = dict(rows(engine, "SELECT id, status FROM trials"))
    for w in workers:  # the last attempt of each trial logged its final status
        for tid, status in w.ended_trials():
            assert status in (final[tid], "noop", "released"), (w.name, tid, status)
        finished_here = {t for (t,) in rows(engine, "SELECT id FROM trials WHERE worker = :w",
                                            w=w.name)}
        assert finished_here <= set(w.started_trials())
