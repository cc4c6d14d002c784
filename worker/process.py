"""The worker program: an in-process RQ worker plus a reconciler thread.

hpsweep ships RQ's non-forking ``SimpleWorker`` by default: forking costs
~10 ms per job and drops the process's database connections and dataset
cache, while the database leases (not RQ's horse monitoring) already detect
a lost trial. ``--fork`` selects RQ's forking ``Worker`` instead.

SIGTERM stops gracefully: the trial in flight stops at its next epoch
boundary, is handed back as ``queued`` (its checkpoint intact) and is picked
up by another worker; a second SIGTERM stops at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from redis import Redis
from rq import SimpleWorker, Worker
from rq.serializers import JSONSerializer

from worker import queue as q
from worker.jobs import runtime
from worker.reconcile import reconcile

log = logging.getLogger("hpsweep.worker")


class _StopAware:
    """Mixin: the first stop request also tells the running trial to hand back."""

    def request_stop(self, signum, frame):  # type: ignore[no-untyped-def]
        runtime().stop_requested = True
        return super().request_stop(signum, frame)  # type: ignore[misc]


class HpsweepWorker(_StopAware, SimpleWorker):
    pass


class HpsweepForkWorker(_StopAware, Worker):
    pass


@dataclass(frozen=True)
class WorkerOptions:
    queue: str = q.DEFAULT_QUEUE
    burst: bool = False
    max_jobs: int | None = None
    reconcile_every: float = 5.0
    fork: bool = False


class Reconciler:
    """Runs ``reconcile`` every ``period`` seconds on its own Redis connection."""

    def __init__(self, redis_url: str, period: float) -> None:
        self._url, self._period = redis_url, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)

    def start(self) -> Reconciler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        conn: Redis | None = None
        while not self._stop.wait(self._period):
            try:
                conn = conn or q.connect(self._url)
                reconcile(runtime().engine, conn)
            except Exception as exc:  # noqa: BLE001 - keep reconciling; next pass may succeed
                log.warning("reconcile failed: %s", exc)
                conn = None


def serve(redis_url: str, opts: WorkerOptions) -> None:
    """Run the worker program until stopped (or the queue is empty with ``burst``)."""
    rt = runtime()
    _ = rt.engine  # fail fast on a bad database before taking jobs
    conn = q.connect(redis_url)
    cls = HpsweepForkWorker if opts.fork else HpsweepWorker
    worker = cls([q.make_queue(conn, opts.queue)], connection=conn, name=rt.worker,
                 serializer=JSONSerializer, job_class=q.AllowlistJob)
    reconciler = None if opts.burst else Reconciler(redis_url, opts.reconcile_every).start()
    if opts.burst:
        reconcile(rt.engine, conn)
    log.info("worker %s serving queue %r", rt.worker, opts.queue)
    try:
        worker.work(burst=opts.burst, max_jobs=opts.max_jobs, logging_level="WARNING",
                    with_scheduler=False)
    finally:
        if reconciler:
            reconciler.stop()
