"""Fixtures of the many-machines tests: a Redis reached over TCP, simulated hosts."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError

from tests.integration_tests.cluster import Host
from tests.pgbouncer import free_port, pgbouncer_binary


@pytest.fixture
def tcp_redis_url(tmp_path: Path) -> Iterator[str]:
    """``redis://:PASSWORD@127.0.0.1:PORT/0``: a private, password-protected ``redis-server``
    on a free loopback port, for this test alone.

    Not the shared ``redis_url``: its database number depends only on the xdist
    worker id, so two pytest sessions running at once share (and flush) it, and
    the other session's workers would take this test's jobs.
    """
    from coordinator.embedded import redis_server_binary

    port, password = free_port(), f"pw{uuid.uuid4().hex}"
    proc = subprocess.Popen(  # config on stdin ("-"): the password stays out of argv
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "-"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(f"requirepass {password}\n".encode())
    proc.stdin.close()
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    try:
        _wait_for_redis(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_for_redis(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if Redis.from_url(url, socket_connect_timeout=0.2).ping():
                return
        except (RedisError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def hosts(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``hosts(name)`` makes a simulated machine under tmp_path."""
    return lambda name: Host(tmp_path / name).make()


@pytest.fixture
def pgbouncer_bin() -> str:
    """The pgbouncer executable; skipped without one, except under CI
    (HPSWEEP_REQUIRE_POSTGRES=1, where ``.ci/run`` installs it): then it fails."""
    found = pgbouncer_binary()
    if found is None:
        if os.environ.get("HPSWEEP_REQUIRE_POSTGRES") == "1":
            pytest.fail("pgbouncer required (HPSWEEP_REQUIRE_POSTGRES=1) but not installed: "
                        "apt-get install pgbouncer")
        pytest.skip("pgbouncer not installed (apt-get install pgbouncer)")
    return found
