"""Lease a database number of a shared Redis server without harming anyone else's data.

The server at 127.0.0.1:6379 is shared: other programs, a developer's second terminal,
a second test session. A database is leased only if it is empty or carries the suite's
own mark (``OWNED``: it was leased by this suite before and is ours to flush); the lease
itself is a key in that database (``LEASE``, with an expiry, so a killed session frees it).
Nothing is written to any database the suite does not lease, database 0 included.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from redis import Redis
from redis.exceptions import WatchError

OWNED = "hpsweep-test:owned"
LEASE = "hpsweep-test:lease"
DBS = range(3, 16)


def keys_besides_lease(conn: Redis) -> list[bytes]:
    """The keys of a leased database other than the lease's own marks."""
    return [k for k in conn.scan_iter() if k not in (OWNED.encode(), LEASE.encode())]


def flush_besides_lease(conn: Redis) -> None:
    """Empty a leased database as a Redis loss would, keeping the lease's marks (a FLUSHDB
    would drop them, and another session could lease the database meanwhile)."""
    for key in conn.scan_iter():
        if key not in (OWNED.encode(), LEASE.encode()):
            conn.delete(key)


def redis_db_url(base: str, db: int) -> str:
    return f"{base}?db={db}" if base.startswith("unix://") else f"{base}/{db}"


def _try_lease(conn: Redis, base: str, db: int, token: str, seconds: int) -> bool:
    """Take the database if it is free and empty or ours; on success it is flushed,
    marked ours and leased, atomically (MULTI/EXEC under WATCH)."""
    with conn.pipeline() as pipe:
        try:
            pipe.watch(LEASE, OWNED)
            if pipe.exists(LEASE) or _locked_by_older_suite(base, db):
                return False  # another session holds it
            if not pipe.exists(OWNED) and pipe.dbsize() > 0:
                return False  # someone else's data: never touch it
            pipe.multi()
            pipe.flushdb()
            pipe.set(OWNED, "1")
            pipe.set(LEASE, token, ex=seconds)
            pipe.execute()
            return True
        except WatchError:  # a concurrent leaser won: try the next database
            return False


def _locked_by_older_suite(base: str, db: int) -> bool:
    """Earlier versions of the suite locked database N with a key in database 0 (only read
    here): a session of such a checkout may be running beside this one."""
    with Redis.from_url(redis_db_url(base, 0)) as conn:
        return bool(conn.exists(f"hpsweep-test-db:{db}"))


@contextlib.contextmanager
def leased_redis_db(base: str, *, seconds: int = 3600, label: str = "test") -> Iterator[str]:
    """The URL of a database of ``base`` leased for the block, emptied after it."""
    token = f"{label}-{os.getpid()}-{uuid.uuid4().hex}"
    for db in DBS:
        conn = Redis.from_url(redis_db_url(base, db))
        if _try_lease(conn, base, db, token, seconds):
            break
        conn.close()
    else:
        raise RuntimeError(f"no free Redis database {DBS.start}..{DBS.stop - 1} on {base} "
                           "(each is in use by another session or holds data that is not the "
                           "test suite's)")
    try:
        yield redis_db_url(base, db)
    finally:
        # Empty it, keep it ours, free it: unless another session leased it meanwhile (our
        # lease expired). No lease at all means the test flushed it: it is still ours.
        with conn.pipeline() as pipe, contextlib.suppress(WatchError):
            pipe.watch(LEASE)
            if pipe.get(LEASE) in (token.encode(), None):
                pipe.multi()
                pipe.flushdb()
                pipe.set(OWNED, "1")
                pipe.execute()
        conn.close()
