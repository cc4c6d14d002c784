"""What the many-worker benchmarks share: worker pools, served databases, process CPU.

Not a benchmark itself. ``scale_workers.py`` and ``coordination.py`` use it to run
``hpsweep worker --processes 16`` pools, a PostgreSQL database served directly or through
a private PgBouncer (``tests/pgbouncer.py``), a private Redis server on a loopback port,
and to read the CPU time of process trees from ``/proc`` (Linux).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import harness
from redis import Redis
from rq import Worker

from coordinator.embedded import redis_server_binary
from tests.support.db import wait_for
from tests.support.pgbouncer import PgBouncer, free_port
from tests.support.processes import WorkerProc, start_worker, stop_all, worker_env
from worker import queue as q

PER_POOL = 16
TICK = os.sysconf("SC_CLK_TCK")


class Pools:
    """``hpsweep worker --processes 16`` pools, ``n`` worker processes in all, each pool
    logging to its own file."""

    def __init__(self, n: int, db_url: str, redis_url: str, queue: str, folder: Path) -> None:
        self.n, self.queue, self.folder = n, queue, folder
        self.env = worker_env(db_url, redis_url, folder / "cache")
        self.procs: list[WorkerProc] = []

    def start(self, conn: Redis, timeout: float = 600) -> None:
        full, rest = divmod(self.n, PER_POOL)
        sizes = [PER_POOL] * full + ([rest] if rest else [])
        for i, size in enumerate(sizes):
            self.procs.append(start_worker(
                ["--processes", str(size), "--queue", self.queue, "--log-level", "warning"],
                log=self.folder / f"pool-{i}.log", env=self.env))
        queue = q.make_queue(conn, self.queue)
        if not wait_for(lambda: Worker.count(connection=conn, queue=queue) >= self.n
                        or not all(p.alive() for p in self.procs), timeout, interval=0.2) \
                or not all(p.alive() for p in self.procs):
            raise RuntimeError(f"{self.n} workers did not start: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        return "".join(p.text() for p in self.procs)

    def pids(self) -> list[int]:
        """Every live process of the pools: the supervisors and their workers."""
        return tree([p.pid for p in self.procs])

    def stop(self) -> None:
        stop_all(self.procs, timeout=120)


@dataclass(frozen=True)
class Served:
    url: str  # what the workers are given
    dbname: str
    direct: str  # the database's own URL (not through the bouncer)
    bouncer: PgBouncer | None = None


@contextlib.contextmanager
def served_database(mode: str, folder: Path, server_pool: int) -> Iterator[Served]:
    """A fresh PostgreSQL database, served ``direct`` or through a private PgBouncer in
    transaction mode (``server_pool`` server connections)."""
    with harness.postgres_db("hpsweep_bench") as direct:
        dbname, user = direct.rsplit("/", 1)[1], direct.split("//")[1].split("@")[0]
        if mode == "direct":
            yield Served(direct, dbname, direct)
            return
        with PgBouncer(folder / "pgbouncer", users=[user], pool_size=server_pool,
                       max_clients=4000) as bouncer:
            yield Served(bouncer.url(user, dbname), dbname, direct, bouncer)


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A Redis server of this run's own on a free loopback port (nothing saved to disk):
    its CPU time and command counts are the run's alone."""
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--maxclients", "10000"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                Redis.from_url(url, socket_connect_timeout=1).ping()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the private redis-server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------- CPU of processes


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def tree(roots: list[int]) -> list[int]:
    """``roots`` and all their live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """Each live process's own user + system CPU seconds (not its children's)."""
    out = {}
    for pid in pids:
        if (fields := _stat(pid)) is not None:
            out[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two ``cpu_seconds`` readings (a process that started in
    between counts from 0; one that ended in between is lost, and rare here)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())
