"""The RQ side: JSON jobs that carry only ids, an allowlist, and enqueue helpers.

Job ids derive from rows (``trial-42``, ``advance-7``) so enqueueing the same
work twice is harmless: the database decides who runs it. The worker runs only
the functions in ``ALLOWED_FUNCTIONS``; a forged job naming ``os.system`` or
``eval`` fails with ``PermissionError`` and the worker carries on.

Every job also names its database (keyword arguments ``fingerprint`` and
``database``, see ``storage.meta``): a worker serves only jobs of its own database.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit, urlunsplit

from redis import Redis
from redis.exceptions import RedisError, ResponseError
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import utcparse

from storage.meta import DatabaseIdentity
from worker.defaults import DEFAULT_QUEUE

RUN_TRIAL = "worker.jobs.run_trial"
ADVANCE_STAGE = "coordinator.jobs.advance_stage"
ALLOWED_FUNCTIONS = frozenset({RUN_TRIAL, ADVANCE_STAGE})
TRIAL_TIMEOUT = 24 * 3600  # leases, not RQ timeouts, detect lost trials
RESULT_TTL = 60
# A live job claims its trial this soon after RQ dequeues it or marks it started. Not
# less: 128 workers on 2 cores (PgBouncer queueing them for 20 server connections) took
# over 2 s between the two, and each job the reconciler then thought dead ran twice
# (``benchmarks/coordination.py``: 111 Redis commands per trial against 51 at 2 workers).
STARTED_GRACE = 10.0


class QueueError(RuntimeError):
    """Redis is unreachable or refused us (message carries the masked URL)."""


class BadRedisURL(QueueError):
    """The Redis URL is malformed or impossible (bad scheme, port or db number): bad input."""


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
    host_port = parts.netloc.rsplit("@", 1)[-1]  # as written: the port may be malformed
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host_port}"))


REDIS_URL_FORMS = ("redis://[user:password@]host[:port]/db, rediss://… or "
                   "unix:///path/to/redis.sock?db=N")


def _bad_url(url: str, reason: str) -> BadRedisURL:
    return BadRedisURL(f"bad Redis URL {mask_redis_url(url)!r}: {reason}; expected "
                       f"{REDIS_URL_FORMS} (--redis / $HPSWEEP_REDIS)")


def check_redis_url(url: str) -> None:
    """Raise ``BadRedisURL`` for a URL no Redis server could ever accept.

    Checked before anything is written; redis-py alone would quietly use db 0 for
    ``redis://host/abc``. Whether the db number exists only the server knows
    (``connect`` asks it).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise _bad_url(url, f"unsupported scheme {parts.scheme + '://' if parts.scheme else ''!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as exc:
        raise _bad_url(url, str(exc)) from None
    dbs = parse_qs(parts.query).get("db", [])
    if parts.scheme != "unix" and parts.path.strip("/"):
        dbs.append(parts.path.strip("/"))
    for db in dbs:
        if not db.isdigit():
            raise _bad_url(url, f"the database number must be an integer >= 0, got {db!r}")
    try:
        Redis.from_url(url)  # parses only; connects lazily
    except ValueError as exc:
        raise _bad_url(url, str(exc).rstrip(".")) from None


def connect(url: str, *, timeout: float = 5.0) -> Redis:
    """A checked Redis connection; fails fast with the masked URL and a hint.

    ``BadRedisURL`` when the URL is malformed or the server says it is impossible
    (no such db number); ``QueueError`` when the server is unreachable or refuses us.
    """
    check_redis_url(url)
    try:
        conn = Redis.from_url(url, socket_connect_timeout=timeout, health_check_interval=30)
        conn.ping()
    except ResponseError as exc:
        if "db index" in str(exc).lower():  # SELECT n past the server's `databases`
            raise _bad_url(url, f"the server has no such database ({exc})") from None
        raise _unreachable(url, exc) from None
    except (RedisError, ValueError, OSError) as exc:
        raise _unreachable(url, exc) from None
    return conn


def _unreachable(url: str, exc: BaseException) -> QueueError:
    return QueueError(f"cannot use Redis at {mask_redis_url(url)}: {str(exc).rstrip('.')}. "
                      "Check that the server runs, the host/port and the password "
                      "(--redis / $HPSWEEP_REDIS).")


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
    A ``queued`` job that sits in its queue's intermediate list was dequeued by a
    worker that died before marking it started (RQ moves the id out of the queue
    first): it counts as live only within ``STARTED_GRACE`` of first being seen there.
    """
    if not job_ids:
        return set()
    with conn.pipeline() as pipe:
        for jid in job_ids:
            pipe.hmget(Job.key_for(jid), "status", "started_at", "origin")
        found = pipe.execute()
    now = float(conn.time()[0])
    waiting = {b"queued", b"scheduled", b"deferred"}
    live = {jid for jid, (status, started, _) in zip(job_ids, found, strict=True)
            if status in waiting or (status == b"started" and _is_recent(started, now))}
    origins = {origin.decode() for jid, (status, _, origin) in zip(job_ids, found, strict=True)
               if status == b"queued" and origin}
    return live - _stuck_in_transit(conn, origins, now)


def _stuck_in_transit(conn: Redis, origins: set[str], now: float) -> set[str]:
    """Ids left in the intermediate lists of ``origins`` for longer than ``STARTED_GRACE``.

    The first time an id is seen there, the Redis server's time is recorded (one clock
    for every machine); an id still there after the grace is dropped from the list, so
    re-enqueueing it leaves one copy, in the queue.
    """
    stuck: set[str] = set()
    for origin in origins:
        transit = IntermediateQueue(f"{Queue.redis_queue_namespace_prefix}{origin}", conn)
        for jid in transit.get_job_ids():
            seen_key = f"hpsweep:transit:{origin}:{jid}"
            if conn.set(seen_key, now, nx=True, ex=600):
                continue
            seen = conn.get(seen_key)
            if seen is not None and now - float(seen) >= STARTED_GRACE:
                transit.remove(jid)
                conn.delete(seen_key)
                stuck.add(jid)
    return stuck


def _is_recent(started_at: bytes | None, now: float) -> bool:
    try:
        started = utcparse(started_at.decode()).timestamp() if started_at else None
    except ValueError:
        return False
    return started is not None and abs(now - started) < STARTED_GRACE


def reconcile_turn(conn: Redis, fingerprint: str, period: float) -> bool:
    """Whether the periodic reconcile pass is this worker's to run now.

    The first worker of a database (among those sharing a Redis database and a period) to
    ask in each period takes the turn: one pass per period however many workers run, not
    one per worker. A pass reads every queued trial; passes x workers made the
    coordination cost per trial grow with the fleet (``benchmarks/coordination.py``). A
    worker that dies holding the turn loses it when the key expires, one period later.
    """
    ms = max(1, round(period * 1000))
    return bool(conn.set(f"hpsweep:reconcile:{fingerprint}:{ms}", b"1", nx=True, px=ms))


def remove_jobs(conn: Redis, queue: Queue, job_ids: list[str]) -> None:
    """Drop queued jobs (cancellation); running ones stop at their next epoch."""
    for jid in job_ids:
        queue.remove(jid)
        conn.delete(Job.key_for(jid))
