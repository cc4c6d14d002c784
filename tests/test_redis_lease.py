"""The suite's Redis leases never touch a database holding someone else's data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis

from coordinator.embedded import EmbeddedRedis
from tests.support.redis_lease import (
    LEASE,
    OWNED,
    flush_besides_lease,
    leased_redis_db,
    redis_db_url,
)


@pytest.fixture
def private_base() -> Iterator[str]:
    """A private embedded server: the leasing rules are checked without the shared one."""
    with EmbeddedRedis() as url:
        yield url.split("?")[0]


def _client(base: str, db: int) -> Redis:
    return Redis.from_url(redis_db_url(base, db))


def test_a_database_with_foreign_data_is_skipped_and_left_intact(private_base: str) -> None:
    _client(private_base, 3).set("someone-elses", "data")
    with leased_redis_db(private_base) as url, leased_redis_db(private_base) as other:
        assert url == redis_db_url(private_base, 4)
        assert other == redis_db_url(private_base, 5)  # leased: never shared
        Redis.from_url(url).set("job", 1)
    assert _client(private_base, 3).keys() == [b"someone-elses"]
    assert _client(private_base, 0).dbsize() == 0  # no lock keys in database 0
    assert _client(private_base, 4).keys() == [OWNED.encode()]  # emptied, still ours


def test_the_suites_own_database_left_dirty_by_a_killed_session_is_reused(
        private_base: str) -> None:
    dirty = _client(private_base, 3)
    dirty.set(OWNED, "1")
    dirty.set("rq:queue:hpsweep", "left over")  # the session died; its lease expired
    with leased_redis_db(private_base) as url:
        assert url == redis_db_url(private_base, 3)
        assert sorted(Redis.from_url(url).keys()) == sorted([OWNED.encode(), LEASE.encode()])


def test_no_free_database_is_a_clear_error(private_base: str) -> None:
    for db in range(3, 16):
        _client(private_base, db).set("theirs", 1)
    with pytest.raises(RuntimeError, match="no free Redis database"), \
            leased_redis_db(private_base):
        pass


def test_a_test_that_flushes_its_database_still_hands_it_back_clean(private_base: str) -> None:
    with leased_redis_db(private_base) as url:
        conn = Redis.from_url(url)
        conn.flushdb()  # marks gone, as a Redis-loss test does
        conn.set("rq:job:trial-1", "x")
    assert _client(private_base, 3).keys() == [OWNED.encode()]


def test_a_database_locked_by_an_older_suite_is_skipped(private_base: str) -> None:
    _client(private_base, 0).set("hpsweep-test-db:3", "older-session")
    with leased_redis_db(private_base) as url:
        assert url == redis_db_url(private_base, 4)


def test_losing_the_jobs_keeps_the_lease(private_base: str) -> None:
    with leased_redis_db(private_base) as url:
        conn = Redis.from_url(url)
        conn.set("rq:job:trial-1", "x")
        flush_besides_lease(conn)
        assert sorted(conn.keys()) == sorted([OWNED.encode(), LEASE.encode()])
        with leased_redis_db(private_base) as other:
            assert other != url  # still leased: no other session can take it
