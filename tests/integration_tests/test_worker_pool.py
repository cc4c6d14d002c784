"""``hpsweep worker --processes N``: N supervised worker processes on one host.

They are named host-pid-xxxx (recorded in ``trials.worker``), share one dataset
cache folder, get the URLs through their environment (not their argv), and
stop together on SIGTERM.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from storage.db import make_engine
from tests.support.configs import write_blobs, write_config
from tests.support.db import assert_sweep_complete, rows, wait_until
from tests.support.processes import hpsweep_cmd, worker_logs

pytestmark = [pytest.mark.integration]

SERVING = re.compile(r"worker (\S+) serving queue")


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_two_processes_share_the_cache_and_both_take_trials(sqlite_url, tcp_redis_url,
                                                            hosts) -> None:
    host = hosts("host")
    write_blobs(host.cwd / "blobs.npz", n=6000, d=16, classes=4)
    config = write_config(host.cwd / "sweep.yaml", "hosts", dataset="blobs.npz",
                          stages=[(16, 1)], batch_size=8)
    name = host.launch(config, sqlite_url, tcp_redis_url)
    engine = make_engine(sqlite_url)
    try:
        # Only the shared cache folder holds the dataset now: a process that did not
        # use it would fetch an empty blob from the database and fail its trials.
        (sha, blob), = rows(engine, "SELECT sha256, data FROM datasets")
        host.cache.mkdir(parents=True)
        (host.cache / f"{sha}.npz").write_bytes(blob)
        with engine.begin() as c:
            c.exec_driver_sql("UPDATE datasets SET data = x''")
        pool = host.worker(None, ["--processes", "2", "--burst", "--db", sqlite_url,
                                  "--redis", tcp_redis_url, "--lease-seconds", "3"])
        assert pool.wait(timeout=60) == 0, worker_logs([pool])
        assert_sweep_complete(engine, name)
        names = {w for (w,) in rows(engine, "SELECT DISTINCT worker FROM trials")}
        assert len(names) == 2, names
        host_pid = re.compile(rf"{re.escape(socket.gethostname())}-(\d+)-[0-9a-f]{{4}}")
        assert all(host_pid.fullmatch(n) for n in names), names
        pids = {int(host_pid.fullmatch(n).group(1)) for n in names}
        assert pool.proc.pid not in pids  # the supervisor itself trains nothing
        assert set(SERVING.findall(pool.text())) == names
        assert list(host.cache.iterdir()) == [host.cache / f"{sha}.npz"]
    finally:
        engine.dispose()


def test_sigterm_stops_every_process_and_urls_stay_out_of_argv(sqlite_url, tcp_redis_url,
                                                                hosts) -> None:
    host = hosts("host")
    make_engine(sqlite_url).dispose()  # workers serve an existing database, never create one
    pool = host.worker(None, ["--processes", "2"],
                       env=host.env(HPSWEEP_DB=sqlite_url, HPSWEEP_REDIS=tcp_redis_url))
    try:
        wait_until(lambda: len(SERVING.findall(pool.text())) == 2, 30, "two workers serving",
                   lambda: worker_logs([pool]))
        children = [int(n.rsplit("-", 2)[1]) for n in SERVING.findall(pool.text())]
        for pid in children:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
            assert "worker" in argv and sqlite_url not in argv and tcp_redis_url not in argv
        sent = time.monotonic()
        pool.sigterm()
        assert pool.wait(timeout=20) == 0, worker_logs([pool])
        assert time.monotonic() - sent < 10
        assert not [p for p in children if _running(p)]
    finally:
        if pool.proc.poll() is None:
            pool.wait(timeout=1)


def test_name_with_several_processes_is_a_usage_error(sqlite_url, tcp_redis_url,
                                                      hosts) -> None:
    host = hosts("host")
    out = subprocess.run(hpsweep_cmd("worker", "--processes", "2", "--name", "x", "--db",
                                     sqlite_url, "--redis", tcp_redis_url),
                         cwd=host.cwd, env=host.env(), capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    assert "--name" in out.stderr
