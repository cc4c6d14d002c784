"""What the sweep benchmarks share: machine facts, servers, and timed sweeps.

Not a benchmark itself. ``overhead.py``, ``utilization.py`` and ``scale.py`` use it
to start a Redis (embedded, or a leased database number on the local server), a
database (a SQLite file, or a PostgreSQL database created for the run and dropped
after it), real ``hpsweep worker`` processes, and to time a sweep from the moment
its jobs are enqueued to the moment the database says it is done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402  (after the path: run as a script from anywhere)
from redis import Redis  # noqa: E402
from rq import Worker  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

from coordinator.config import SweepConfig, parse_config  # noqa: E402
from coordinator.launch import create_sweep, enqueue_stage, prepare_dataset  # noqa: E402
from coordinator.runner import WorkerArgs, WorkerPool  # noqa: E402
from coordinator.term import table  # noqa: E402, F401  (the benchmarks' tables)
from storage.db import make_engine  # noqa: E402
from tests.support.redis_lease import leased_redis_db  # noqa: E402
from tests.support.servers import (  # noqa: E402, F401  (re-exported to the benchmarks)
    LOCAL_REDIS,
    local_redis_answers,
    pg_admin,
    postgres_answers,
    postgres_db,
)
from worker import queue as q  # noqa: E402
from worker.process import WorkerOptions  # noqa: E402

# ---------------------------------------------------------------- machine


def machine_lines() -> list[str]:
    """Cores, CPU, Python/NumPy versions and the BLAS NumPy loaded (threadpoolctl)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    lines = [f"machine: {os.cpu_count()} cores ({cpu}); Python {platform.python_version()}, "
             f"NumPy {np.__version__}"]
    for lib in threadpool_info():
        lines.append(f"BLAS: {lib['internal_api']} {lib.get('version')} "
                     f"({lib.get('architecture')}, {lib['num_threads']} threads max; workers "
                     "pin 1)")
    return lines


# ---------------------------------------------------------------- servers


def backends(only: str | None = None) -> Iterator[str]:
    """"sqlite" and "postgresql" (or just ``only``); PostgreSQL skipped, saying so, without a
    server."""
    for kind in ("sqlite", "postgresql"):
        if only not in (None, kind):
            continue
        if kind == "postgresql" and not postgres_answers():
            print("postgresql: skipped, no server at 127.0.0.1:5432")
            continue
        yield kind


@contextlib.contextmanager
def embedded_redis() -> Iterator[str]:
    from coordinator.embedded import EmbeddedRedis

    with EmbeddedRedis() as url:
        yield url


def leased_redis() -> contextlib.AbstractContextManager[str]:
    """A database number of the local Redis leased like the tests do, emptied after."""
    return leased_redis_db(LOCAL_REDIS, label="bench")


@contextlib.contextmanager
def sqlite_db() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="hpsweep-bench-") as folder:
        yield f"sqlite:///{folder}/bench.db"


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    with (sqlite_db() if kind == "sqlite" else postgres_db("hpsweep_bench")) as url:
        yield url


@contextlib.contextmanager
def redis_server(kind: str) -> Iterator[str]:
    with (embedded_redis() if kind == "embedded" else leased_redis()) as url:
        yield url


# ---------------------------------------------------------------- sweeps


@dataclass(frozen=True)
class SweepTiming:
    """One sweep run by real workers: wall time from enqueue to done, and its trials."""

    wall: float  # seconds from enqueueing stage 0 to the sweep's status leaving 'running'
    trials: int  # trials that ran
    epochs: int  # curve rows written
    train_seconds: float  # sum of curves.seconds: time inside train_epoch
    workers: int
    worker_cpu: float = 0.0  # CPU seconds the worker processes (and their children) used
    job_seconds: float = 0.0  # time the workers spent inside RQ jobs (RQ's own count)

    @property
    def cpu_overhead_ms(self) -> float:
        """(worker CPU time - training time) per trial: the overhead no other load inflates
        (training time itself is wall time, so this is a lower bound)."""
        return (self.worker_cpu - self.train_seconds) / self.trials * 1e3

    @property
    def overhead_ms(self) -> float:
        """(workers x wall - training time) per trial, in milliseconds."""
        return (self.workers * self.wall - self.train_seconds) / self.trials * 1e3

    @property
    def efficiency(self) -> float:
        """Training time / (workers x wall)."""
        return self.train_seconds / (self.workers * self.wall)


def process_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of processes and their waited-for children (Linux)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def load_average() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def config(name: str, dataset: str, space: dict[str, Any], stages: list[dict[str, Any]],
           train: dict[str, Any] | None = None, **top: Any) -> SweepConfig:
    data = {"name": name, "dataset": dataset, "seed": top.pop("seed", 0), "train": train or {},
            "space": space, "stages": stages, **top}
    return parse_config(data, source=f"<{name}>")


class Bench:
    """A database, a Redis and ``n`` live worker processes, ready to run timed sweeps."""

    def __init__(self, db_url: str, redis_url: str, workers: int = 2, fork: bool = False,
                 cache_dir: str | None = None) -> None:
        self.db_url, self.redis_url, self.n = db_url, redis_url, workers
        self.engine: Engine = make_engine(db_url)
        # polls through a read-only engine: on SQLite a plain BEGIN, not the write lock
        self.reader: Engine = make_engine(db_url, readonly=True)
        self.conn = Redis.from_url(redis_url)
        self.queue = f"bench-{uuid.uuid4().hex[:8]}"
        opts = WorkerOptions(queue=self.queue, reconcile_every=5, fork=fork)
        self.pool = WorkerPool(workers, db_url, redis_url, WorkerArgs(opts, cache_dir=cache_dir))
        self._datasets: dict[str, tuple[bytes, str, tuple[int, int, int]]] = {}

    def __enter__(self) -> Bench:
        self.pool.start()
        queue = q.make_queue(self.conn, self.queue)
        deadline = time.monotonic() + 60
        while Worker.count(connection=self.conn, queue=queue) < self.n:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start within 60 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.stop()
        self.conn.close()
        self.engine.dispose()
        self.reader.dispose()

    def run(self, cfg: SweepConfig, poll: float = 0.02, timeout: float = 3600) -> SweepTiming:
        """Create ``cfg`` in the database, enqueue stage 0, wait for the sweep to end."""
        if cfg.dataset not in self._datasets:
            self._datasets[cfg.dataset] = prepare_dataset(cfg)
        made = create_sweep(self.engine, cfg, self.queue, self._datasets[cfg.dataset])
        pids = [p.pid for p in self.pool.procs]
        cpu0, busy0 = process_cpu(pids), self.job_seconds()
        started = time.perf_counter()
        enqueue_stage(self.engine, self.conn, self.queue, made.stage_id, made.n_trials)
        status = text("SELECT status FROM sweeps WHERE id = :id")
        while True:
            with self.reader.connect() as c:
                if c.execute(status, {"id": made.sweep_id}).scalar() != "running":
                    break
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"sweep {made.name} did not finish in {timeout:.0f} s")
            time.sleep(poll)
        wall = time.perf_counter() - started
        timing = self._timing(made.sweep_id, wall, process_cpu(pids) - cpu0)
        return dataclasses.replace(timing, job_seconds=self.job_seconds() - busy0)

    def job_seconds(self) -> float:
        """Seconds the workers of this bench spent inside jobs so far (RQ adds each job's
        duration to its worker's ``total_working_time``)."""
        queue = q.make_queue(self.conn, self.queue)
        return sum(w.total_working_time for w in Worker.all(connection=self.conn, queue=queue))

    def _timing(self, sweep_id: int, wall: float, cpu: float) -> SweepTiming:
        with self.reader.connect() as c:
            trials, bad = c.execute(text(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE status <> 'done') FROM trials "
                "WHERE sweep_id = :id"), {"id": sweep_id}).one()
            # a carried trial starts with its parent's curve rows: count only new epochs
            epochs, seconds = c.execute(text(
                "SELECT COUNT(*), COALESCE(SUM(c.seconds), 0) FROM curves c "
                "JOIN trials t ON t.id = c.trial_id LEFT JOIN trials p ON p.id = t.parent_id "
                "WHERE t.sweep_id = :id AND c.epoch > COALESCE(p.epochs, 0)"),
                {"id": sweep_id}).one()
        if bad:
            print(f"  note: {bad} trial(s) of sweep {sweep_id} did not end 'done'",
                  file=sys.stderr)
        return SweepTiming(wall, int(trials), int(epochs), float(seconds), self.n, cpu)
