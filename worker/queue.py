"""The RQ side: JSON jobs that carry only ids, an allowlist, and enqueue helpers.

Job ids derive from rows (``trial-42``, ``advance-7``) so enqueueing the same
work twice is harmless: the database decides who runs it. The worker runs only
the functions in ``ALLOWED_FUNCTIONS``; a forged job naming ``os.system`` or
``eval`` fails with ``PermissionError`` and the worker carries on.

Every job also names its database (keyword arguments ``fingerprint`` and
``database``, see ``storage.meta``): a worker serves only jobs of its own database.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import utcparse

from storage.meta import DatabaseIdentity

RUN_TRIAL = "worker.jobs.run_trial"
ADVANCE_STAGE = "coordinator.jobs.advance_stage"
ALLOWED_FUNCTIONS = frozenset({RUN_TRIAL, ADVANCE_STAGE})
DEFAULT_QUEUE = "hpsweep"
TRIAL_TIMEOUT = 24 * 3600  # leases, not RQ timeouts, detect lost trials
RESULT_TTL = 60
STARTED_GRACE = 2.0  # a live job claims its trial this soon after RQ marks it started


class QueueError(RuntimeError):
    """Redis is unreachable or refused us (message carries the masked URL)."""


class AllowlistJob(Job):
    """A job that refuses to call anything but hpsweep's own job functions.

    RQ resolves a job's function (and callbacks) by importing a dotted path,
    falling back to builtins, so JSON alone would still run ``eval``.
    """

    def _refuse_callbacks(self) -> None:
        for name in (self._success_callback_name, self._failure_callback_name,
                     self._stopped_callback_name):
            if name:
                raise PermissionError(f"callback not allowed: {name!r}")
        if self.webhooks:
            raise PermissionError("webhooks not allowed")

    @property
    def func(self):  # type: ignore[override]
        if self.func_name not in ALLOWED_FUNCTIONS or self.instance is not None:
            raise PermissionError(f"function not allowed: {self.func_name!r}")
        self._refuse_callbacks()
        return super().func

    @property
    def success_callback(self):  # type: ignore[override]
        self._refuse_callbacks()
        return None

    @property
    def failure_callback(self):  # type: ignore[override]
        self._refuse_callbacks()
        return None

    @property
    def stopped_callback(self):  # type: ignore[override]
        self._refuse_callbacks()
        return None


def mask_redis_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def connect(url: str, *, timeout: float = 5.0) -> Redis:
    """A checked Redis connection; fails fast with the masked URL and a hint."""
    try:
        conn = Redis.from_url(url, socket_connect_timeout=timeout, health_check_interval=30)
        conn.ping()
    except (RedisError, ValueError, OSError) as exc:
        raise QueueError(f"cannot use Redis at {mask_redis_url(url)}: {str(exc).rstrip('.')}. "
                         "Check that the "
                         "server runs, the host/port and the password "
                         "(--redis / $HPSWEEP_REDIS).") from None
    return conn


def make_queue(conn: Redis, name: str = DEFAULT_QUEUE) -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer, job_class=AllowlistJob)


def origin_kwargs(origin: DatabaseIdentity) -> dict[str, str]:
    """The job arguments naming the database a job belongs to."""
    return {"fingerprint": origin.fingerprint, "database": origin.description}


def job_origin(job: Job) -> DatabaseIdentity | None:
    """The database ``job`` names, or None: no (well-formed) fingerprint, an unreadable
    payload. Such a job is left to the job function, which refuses it."""
    try:
        kwargs = job.kwargs
    except Exception:  # noqa: BLE001 - a broken payload fails later, in RQ's own path
        return None
    if not isinstance(kwargs, dict):  # forged; RQ's call fails on it, not this worker's loop
        return None
    fingerprint, database = kwargs.get("fingerprint"), kwargs.get("database")
    # printable and short: the description goes into a log line as it is
    if not (is_fingerprint(fingerprint) and isinstance(database, str)
            and database.isprintable() and len(database) <= 1000):
        return None
    return DatabaseIdentity(fingerprint, database)


def is_fingerprint(value: object) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(
        c in "0123456789abcdef" for c in value)


def trial_job_id(trial_id: int) -> str:
    return f"trial-{trial_id}"


def enqueue_trials(queue: Queue, trial_ids: list[int], origin: DatabaseIdentity) -> None:
    """One RQ job per trial of ``origin``'s database, sent in one pipeline."""
    if not trial_ids:
        return
    kwargs = origin_kwargs(origin)
    jobs = [Queue.prepare_data(RUN_TRIAL, args=(int(t),), kwargs=kwargs, job_id=trial_job_id(t),
                               timeout=TRIAL_TIMEOUT, result_ttl=RESULT_TTL,
                               failure_ttl=7 * 86400) for t in trial_ids]
    with queue.connection.pipeline() as pipe:
        queue.enqueue_many(jobs, pipeline=pipe)
        pipe.execute()


def advance_job_id(stage_id: int) -> str:
    return f"advance-{stage_id}"


def enqueue_advance(queue: Queue, stage_id: int, origin: DatabaseIdentity) -> None:
    """Ask some worker to advance a finished stage (idempotent: the DB decides)."""
    queue.enqueue_call(ADVANCE_STAGE, args=(int(stage_id),), kwargs=origin_kwargs(origin),
                       job_id=advance_job_id(stage_id), result_ttl=RESULT_TTL,
                       failure_ttl=7 * 86400, at_front=True)


def live_job_ids(conn: Redis, job_ids: list[str]) -> set[str]:
    """Which of ``job_ids`` RQ still holds for a worker: waiting, or started just now.

    Callers ask about work the database says nobody runs (a ``queued`` trial, a
    finished stage). A job RQ shows ``started`` for longer than ``STARTED_GRACE``
    is then a dead execution (a SIGKILLed or frozen worker leaves it ``started``
    for good), not a live one; only the moment between dequeue and claim counts.
    """
    if not job_ids:
        return set()
    with conn.pipeline() as pipe:
        for jid in job_ids:
            pipe.hmget(Job.key_for(jid), "status", "started_at")
        found = pipe.execute()
    now = float(conn.time()[0])
    waiting = {b"queued", b"scheduled", b"deferred"}
    return {jid for jid, (status, started) in zip(job_ids, found, strict=True)
            if status in waiting or (status == b"started" and _is_recent(started, now))}


def _is_recent(started_at: bytes | None, now: float) -> bool:
    try:
        started = utcparse(started_at.decode()).timestamp() if started_at else None
    except ValueError:
        return False
    return started is not None and abs(now - started) < STARTED_GRACE


def remove_jobs(conn: Redis, queue: Queue, job_ids: list[str]) -> None:
    """Drop queued jobs (cancellation); running ones stop at their next epoch."""
    for jid in job_ids:
        queue.remove(jid)
        conn.delete(Job.key_for(jid))
