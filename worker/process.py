"""The worker program: an in-process RQ worker plus a reconciler thread.

hpsweep ships RQ's non-forking ``SimpleWorker`` by default: RQ 3's ``Worker``
starts a new Python interpreter for every job (``posix_spawn``), so each trial
pays for imports, a database connection and a dataset load (~60 ms of overhead
per trial against 4.5 ms on the 2-core development machine, see
``benchmarks/overhead.py``), while a simple worker keeps its engine, dataset cache,
sweep configs and lease keeper across trials; the database leases (not RQ's horse
monitoring) already detect a lost trial. ``--fork`` selects RQ's ``Worker`` instead.

SIGTERM stops gracefully: the trial in flight stops at its next epoch
boundary, is handed back as ``queued`` (its checkpoint intact) and is picked
up by another worker; a second SIGTERM stops at once.

A worker serves only its own database (DESIGN principle 7): it never creates
one, and a job naming another database's fingerprint goes back to the front of
its queue, untouched, while the worker stops with ``WrongDatabase``.
"""

from __future__ import annotations

import itertools
import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass
from types import FrameType

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker, WorkerStatus

from worker import queue as q
from worker.jobs import missing_model, runtime
from worker.models import ModelUnavailable
from worker.reconcile import reconcile

log = logging.getLogger("hpsweep.worker")


def _put_back(conn: Redis, queue: Queue, job: Job, *, front: bool) -> None:
    """Undo RQ's dequeue of a job not performed: its id leaves the queue's intermediate
    list for the front (``front``) or the end of the queue; its hash is untouched (still
    ``queued``) and no registry holds it. Only an id still in that list moves: one put back
    already (a stop arriving while the model check paused after its own put-back) is not
    queued twice."""
    if conn.lrem(queue.intermediate_queue_key, 1, job.id):
        (conn.lpush if front else conn.rpush)(queue.key, job.id)


class _StopAware(BaseWorker):
    """Mixin: the first stop request also tells the running trial to hand back, and a job
    dequeued once a stop was requested goes back to the front of its queue unperformed.

    RQ's handler raises ``StopRequested`` from wherever an idle worker happens to be; between
    the dequeue and the job's start that is inside hpsweep's own checks of the job (below),
    so the job is put back and the stop is noted on the worker too (``_stop_requested``):
    were the exception swallowed on the way, RQ's loop would otherwise take job after job,
    each claimed and handed straight back.
    """

    max_connection_wait_time = 5.0  # RQ's reconnect backoff cap (60 s): serve soon after an outage

    def execute_job(self, job: Job, queue: Queue) -> None:
        if not runtime().stop_requested:
            try:
                return super().execute_job(job, queue)
            except StopRequested:
                if self.get_state() == WorkerStatus.BUSY:  # not raised before the job's start
                    raise
                _put_back(self.connection, queue, job, front=True)
                raise
        _put_back(self.connection, queue, job, front=True)
        self._stop_requested = True
        return None

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        runtime().stop_requested = True
        self._stop_requested = True
        try:
            return super().request_stop(signum, frame)
        except RedisError as exc:
            # RQ notes the request in Redis from inside the signal handler; with Redis gone
            # (an embedded one dies with the pool that started both) that error would fail
            # the trial in flight instead of letting it hand back at the epoch's end.
            log.warning("stop requested; Redis did not record it: %s", exc)
            return None


class WrongDatabase(RuntimeError):
    """A job of another database reached this worker; it is back in its queue."""


class _OwnDatabaseOnly(BaseWorker):
    """Mixin: look at each job before performing it; a job of another database goes back
    to the front of its queue and the worker stops (``wrong_database`` says why).

    This runs between RQ's dequeue (which moved the job id into the queue's intermediate
    list) and ``prepare_execution`` (which would register it as started), so handing it
    back is undoing the move: the job's hash is untouched and still ``queued``, and no
    registry holds it. A job naming no database is performed, and refused by the job
    function (see ``worker.jobs``).
    """

    wrong_database: str | None = None

    def execute_job(self, job: Job, queue: Queue) -> None:
        origin = q.job_origin(job)
        own = runtime().identity
        if origin is None or origin.fingerprint == own.fingerprint:
            return super().execute_job(job, queue)
        _put_back(self.connection, queue, job, front=True)
        self.wrong_database = (
            f"job {job.id} belongs to database {origin.description}, not to this worker's "
            f"{own.description} (fingerprints {origin.fingerprint[:8]}… and "
            f"{own.fingerprint[:8]}…): left it in queue {queue.name!r} and stopped. Start the "
            "worker with --db (or $HPSWEEP_DB) naming the job's database; databases that "
            "share a Redis server need a Redis database number each (redis://host:6379/N)")
        self._stop_requested = True  # RQ's loop ends before its next dequeue
        return None


class _OfferedModelsOnly(BaseWorker):
    """Mixin: a trial whose sweep's model this worker cannot train (not installed, failing
    to import, or left out by ``--models``) goes back to the end of its queue, untouched, for
    a worker that can; this worker logs it once per model and carries on with other jobs.

    Meeting a job it handed back again, with nothing performed in between, means the queue
    holds nothing this worker can train: with ``--burst`` it stops, else it pauses (0.5 s,
    doubling to 5 s) before looking again, so it never spins on Redis.
    """

    hpsweep_burst = False
    _first_handed_back: str | None = None
    _pause = 0.0

    def execute_job(self, job: Job, queue: Queue) -> None:
        missing = _missing_model(job)
        if missing is None:
            self._first_handed_back, self._pause = None, 0.0
            return super().execute_job(job, queue)
        _put_back(self.connection, queue, job, front=False)
        if missing.name not in _told:
            _told.add(missing.name)
            log.warning("worker %s on host %s cannot train model %r (%s): job %s and any "
                        "other of that model go back to queue %r for another worker",
                        runtime().worker, socket.gethostname(), missing.name, missing,
                        job.id, queue.name)
        if self._first_handed_back is None:
            self._first_handed_back = job.id
        elif self._first_handed_back == job.id:  # round the whole queue: nothing for us
            if self.hpsweep_burst:
                self._stop_requested = True
            else:
                time.sleep(self._pause)
                self._pause = min(5.0, max(0.5, 2 * self._pause))
        return None


_told: set[str] = set()  # models this process has said it cannot train


def _missing_model(job: Job) -> ModelUnavailable | None:
    """Why this worker cannot train the trial ``job`` runs, or None (also for any job that
    is not a well-formed trial job: the job function deals with those)."""
    try:
        if job.func_name != q.RUN_TRIAL or not job.args:
            return None
        trial_id = job.args[0]
    except Exception:  # noqa: BLE001 - a broken payload fails later, in RQ's own path
        return None
    if isinstance(trial_id, bool) or not isinstance(trial_id, int):
        return None
    try:
        return missing_model(trial_id)
    except StopRequested:  # RQ's stop, raised by its signal handler: not this check's error
        raise
    except Exception as exc:  # noqa: BLE001 - the job function meets (and records) it too
        log.warning("could not check the model of trial %d: %s", trial_id, exc)
        return None


class _FewerRoundTrips(BaseWorker):
    """Mixin: RQ refreshes the worker's own key (3 commands, 3 round trips) up to three
    times per job and sets its state to 'idle' twice; with trials of a few milliseconds
    those ~11 round trips cost as much as the trial's own bookkeeping. Here a refresh sends
    its commands in one pipeline and is skipped within ``HEARTBEAT_EVERY`` seconds of the
    last one (the key lives ``worker_ttl`` + 60 s), and an unchanged state is not resent.
    Refreshes RQ makes with an explicit timeout or pipeline (around a job) are untouched.
    """

    HEARTBEAT_EVERY = 1.0
    _beat_at = -float("inf")

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        if timeout is not None or pipeline is not None:
            return super().heartbeat(timeout, pipeline)
        if time.monotonic() - self._beat_at < self.HEARTBEAT_EVERY:
            return None
        with self.connection.pipeline() as pipe:
            super().heartbeat(None, pipeline=pipe)
            pipe.execute()
        self._beat_at = time.monotonic()
        return None

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        if pipeline is None and state == self.get_state():
            return None
        return super().set_state(state, pipeline)


class HpsweepWorker(_StopAware, _OwnDatabaseOnly, _OfferedModelsOnly, _FewerRoundTrips,
                    SimpleWorker):
    pass


# Held by the reconciler thread for its pass, and by a forking worker around ``fork()``: a
# work horse is a fork of a process with threads, and only the forking thread goes on in
# it. Forked while the reconciler sat inside SQLite (or a connection pool), a horse inherits
# that library's mutex held for ever and hangs on it, outliving its worker (seen in
# ``benchmarks/overhead.py``'s fork rows: a horse asleep on a futex with its worker gone).
_NO_FORK_NOW = threading.Lock()


class HpsweepForkWorker(_StopAware, _OwnDatabaseOnly, _OfferedModelsOnly, Worker):
    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        with _NO_FORK_NOW:  # in the horse, held until it exits: it never reconciles
            super().fork_work_horse(job, queue)


@dataclass(frozen=True)
class WorkerOptions:
    queue: str = q.DEFAULT_QUEUE
    burst: bool = False
    max_jobs: int | None = None
    reconcile_every: float = 5.0
    fork: bool = False


class Reconciler:
    """Runs ``reconcile`` every ``period`` seconds on its own Redis connection, when it is
    this worker's turn (``queue.reconcile_turn``: one pass per period among the workers of a
    database)."""

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
                rt = runtime()
                if q.reconcile_turn(conn, rt.identity.fingerprint, self._period):
                    with _NO_FORK_NOW:
                        reconcile(rt.engine, conn)
            except Exception as exc:  # noqa: BLE001 - keep reconciling; next pass may succeed
                log.warning("reconcile failed: %s", exc)
                conn = None


def serve(redis_url: str, opts: WorkerOptions) -> None:
    """Run the worker program until stopped (or the queue is empty with ``burst``).

    RQ's loop quits on a Redis error it does not retry (Redis restarted while a
    job ran, say); the worker program then waits for Redis and serves again, so
    a Redis outage needs no one to restart workers.
    """
    rt = runtime()
    _ = rt.identity  # fail fast on a bad or missing database before taking jobs
    conn = q.connect(redis_url)
    reconciler = None if opts.burst else Reconciler(redis_url, opts.reconcile_every).start()
    if opts.burst:
        reconcile(rt.engine, conn)
    log.info("worker %s serving queue %r", rt.worker, opts.queue)
    try:
        for restart in itertools.count():
            # a new RQ name after a restart: the old one may still look alive in Redis
            name = rt.worker if restart == 0 else f"{rt.worker}-r{restart}"
            rq_worker = _rq_worker(conn, opts, name)
            _work(rq_worker, opts)
            if rq_worker.wrong_database:
                raise WrongDatabase(rq_worker.wrong_database)
            if opts.burst or opts.max_jobs is not None or rt.stop_requested:
                return
            log.warning("worker %s: RQ's loop quit on an error; serving again once Redis "
                        "answers", rt.worker)
            if not _wait_for_redis(conn):
                return
    finally:
        if reconciler:
            reconciler.stop()


def _rq_worker(conn: Redis, opts: WorkerOptions, name: str) -> HpsweepWorker | HpsweepForkWorker:
    cls = HpsweepForkWorker if opts.fork else HpsweepWorker
    worker = cls([q.make_queue(conn, opts.queue)], connection=conn, name=name,
                 serializer=JSONSerializer, job_class=q.AllowlistJob)
    worker.hpsweep_burst = opts.burst
    return worker


def _work(worker: Worker, opts: WorkerOptions) -> None:
    try:
        worker.work(burst=opts.burst, max_jobs=opts.max_jobs, logging_level="WARNING",
                    with_scheduler=False)
    except RedisError as exc:  # RQ's teardown talks to Redis too
        log.warning("worker %s: %s", worker.name, exc)


def _wait_for_redis(conn: Redis) -> bool:
    """Wait until Redis answers (True) or a stop signal comes (False)."""
    rt = runtime()

    def stop(*_: object) -> None:
        rt.stop_requested = True

    for sig in (signal.SIGTERM, signal.SIGINT):  # RQ's handlers belong to the dead loop
        signal.signal(sig, stop)
    delay = 0.5
    while not rt.stop_requested:
        time.sleep(delay)
        try:
            conn.ping()
            return True
        except (RedisError, OSError):
            delay = min(2 * delay, 5.0)
    return False
