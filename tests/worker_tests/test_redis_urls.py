"""Redis URLs: the malformed or impossible ones are bad input (``BadRedisURL``), told
apart from a server that is merely unreachable (``QueueError``), before any write."""

from __future__ import annotations

import pytest

from worker.queue import BadRedisURL, QueueError, check_redis_url, connect, mask_redis_url


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:6379/0", "unsupported scheme"),
    ("127.0.0.1:6379", "unsupported scheme"),
    ("redis://127.0.0.1:6379/abc", "integer"),  # redis-py alone would quietly use db 0
    ("redis://127.0.0.1:6379/-1", "integer"),
    ("redis://127.0.0.1:6379/0/extra", "integer"),
    ("redis://127.0.0.1:6379/0?db=x", "integer"),
    ("unix:///tmp/redis.sock?db=one", "integer"),
    ("redis://127.0.0.1:99999/0", "Port"),
    ("redis://:s3cret@127.0.0.1:port/0", "Port"),
])
def test_malformed_urls_are_bad_input_and_masked(url, reason) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadRedisURL, match=reason) as err:
        check_redis_url(url)
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379",
                                 "rediss://user:pw@host:6380/15", "unix:///tmp/r.sock?db=3",
                                 "redis://localhost?db=2"])
def test_well_formed_urls_pass(url) -> None:  # type: ignore[no-untyped-def]
    check_redis_url(url)


@pytest.mark.integration
def test_a_db_number_the_server_lacks_is_bad_input_a_refused_port_is_not(redis_url: str) -> None:
    base = redis_url.split("?")[0] + "?db=99" if redis_url.startswith("unix://") else \
        redis_url.rsplit("/", 1)[0] + "/99"
    with pytest.raises(BadRedisURL, match="no such database"):
        connect(base)
    with pytest.raises(QueueError) as err:
        connect("redis://127.0.0.1:1/0", timeout=2)
    assert not isinstance(err.value, BadRedisURL)


def test_masking_survives_a_malformed_port() -> None:
    assert mask_redis_url("redis://u:pw@h:notaport/0") == "redis://u:***@h:notaport/0"
