"""Local worker pools: ``hpsweep run``, ``worker --processes N``, ``ensemble --workers N``.

A pool's children are ``hpsweep worker`` programs whose command line is built in
one place (``WorkerArgs.argv``). The supervisor restarts workers that die,
reconciles (lost jobs, expired leases) every few seconds, and returns when the
sweep leaves ``running``. Every process it started is stopped before it returns,
Ctrl-C included; the sweep itself stays resumable in the database. If the
supervising process dies instead (``kill -9``), its workers stop by themselves
(``coordinator.lifetime``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from redis import Redis
from sqlalchemy import Engine

from coordinator.lifetime import die_with_parent, handle_stop_signals
from coordinator.report import Progress, progress
from worker.process import WorkerOptions
from worker.reconcile import reconcile

BAD_INPUT = 2  # a worker's exit code for a wrong --db / a job of another database


class WorkersRefused(RuntimeError):
    """Every worker of a pool stopped on bad input; restarting them would loop."""


STOP_GRACE = 60.0  # seconds a stopped `worker --processes` pool waits for its epochs in flight
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class WorkerArgs:
    """What a worker child is told on its command line. URLs are not: they travel in
    its environment, never in argv (``ps`` shows argv to every user)."""

    opts: WorkerOptions
    lease_seconds: float | None = None  # None: the worker program's default
    cache_dir: str | None = None  # None: the worker program's default
    log_level: str = "warning"
    blas_threads: int = 1

    def argv(self) -> list[str]:
        """``hpsweep worker`` arguments; the one place they are built."""
        o = self.opts
        return ["worker", "--queue", o.queue, "--blas-threads", str(self.blas_threads),
                "--reconcile-every", str(o.reconcile_every), "--log-level", self.log_level,
                *(["--lease-seconds", str(self.lease_seconds)] if self.lease_seconds else []),
                *(["--cache-dir", self.cache_dir] if self.cache_dir else []),
                *(["--burst"] if o.burst else []),
                *(["--max-jobs", str(o.max_jobs)] if o.max_jobs else []),
                *(["--fork"] if o.fork else [])]


@dataclass
class WorkerPool:
    """N ``hpsweep worker`` child processes sharing the given URLs."""

    n: int
    db_url: str
    redis_url: str
    args: WorkerArgs
    # An orphaned worker that has not stopped gracefully this long after its pool's
    # process died exits at once (its trial's lease then expires and it is retried).
    orphan_grace: float = 60.0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    restarts: int = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, HPSWEEP_DB=self.db_url, HPSWEEP_REDIS=self.redis_url)
        # Pin BLAS before NumPy starts in the child: N trainers x N threads thrash 2 cores.
        env.update({v: str(self.args.blas_threads) for v in BLAS_VARS})
        env.pop("HPSWEEP_WORKER_NAME", None)
        # coordinator.child runs `hpsweep worker` and stops it once this process is gone.
        cmd = [sys.executable, "-m", "coordinator.child", str(os.getpid()),
               str(self.orphan_grace), *self.args.argv()]
        # Their own session: Ctrl-C or a closed terminal reaches only this process, which
        # stops the workers in order (and stop() can kill a worker's whole group). If this
        # process dies instead, the kernel sends each worker SIGTERM, not SIGKILL: a worker
        # finishes the epoch in flight and hands its trial back as queued, so `hpsweep
        # resume` continues at once rather than after the trial's lease expires.
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=die_with_parent(signal.SIGTERM))

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.n)]

    def revive(self) -> int:
        """Restart workers that exited; returns how many.

        A worker that exited on bad input (exit 2: its database is missing, or a job of
        another database reached it) would only fail again: it is not restarted, and once
        every worker has, ``WorkersRefused`` says so instead of restarting them for ever.
        """
        n = 0
        for i, p in enumerate(self.procs):
            code = p.poll()
            if code is not None and code != BAD_INPUT:
                self.procs[i] = self._spawn()
                n += 1
        if self.procs and all(p.poll() == BAD_INPUT for p in self.procs):
            raise WorkersRefused("every worker process stopped on bad input (exit 2; their "
                                 "message is above): check --db and --redis")
        self.restarts += n
        return n

    def stop(self, grace: float = 10.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []


def supervise(engine: Engine, conn: Redis, sweep_id: int, pool: WorkerPool,
              on_progress: Callable[[Progress], None], *, poll: float = 0.5,
              reconcile_every: float = 3.0) -> Progress:
    """Watch the sweep until it leaves ``running``; returns the final progress."""
    last_reconcile = time.monotonic()
    while True:
        state = progress(engine, sweep_id)
        on_progress(state)
        if state.status != "running":
            return state
        if time.monotonic() - last_reconcile > reconcile_every:
            reconcile(engine, conn, sweep_id)
            pool.revive()
            last_reconcile = time.monotonic()
        time.sleep(poll)


def serve_pool(n: int, db_url: str, redis_url: str, args: WorkerArgs) -> list[int]:
    """Run ``n`` worker processes until they all exit (or SIGTERM, SIGHUP or Ctrl-C stops
    them); returns the non-zero exit codes of workers that failed on their own."""
    from storage.db import make_engine
    from worker.queue import connect

    # a bad URL fails once here, not in n children; the supervisor then holds no connection
    make_engine(db_url, create=False).dispose()
    connect(redis_url).close()
    pool = WorkerPool(n, db_url, redis_url, args)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    handle_stop_signals(_stop)  # SIGTERM and SIGHUP (terminal closed) act as Ctrl-C
    pool.start()
    try:
        while not stopping and any(p.poll() is None for p in pool.procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        stopping = True
    codes = [p.poll() for p in pool.procs]
    pool.stop(grace=STOP_GRACE)
    return [] if stopping else [c for c in codes if c not in (0, None)]


def default_cache_dir() -> str:
    """The host's dataset cache shared by its workers (XDG cache folder)."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return str(base / "hpsweep" / "datasets")


def serve_workers(db_url: str, redis_url: str, processes: int, name: str | None,
                  args: WorkerArgs) -> list[int]:
    """``hpsweep worker``: this process serves, or with ``processes > 1`` supervises that
    many worker children; returns the exit codes of children that failed on their own."""
    cache = args.cache_dir or default_cache_dir()
    os.environ.update(HPSWEEP_DB=db_url, HPSWEEP_LEASE_SECONDS=str(args.lease_seconds),
                      HPSWEEP_CACHE=cache)
    if name:
        os.environ["HPSWEEP_WORKER_NAME"] = name
    if processes > 1:
        return serve_pool(processes, db_url, redis_url, replace(args, cache_dir=cache))
    from threadpoolctl import threadpool_limits

    from worker.process import serve

    threadpool_limits(limits=args.blas_threads)
    serve(redis_url, args.opts)
    return []
