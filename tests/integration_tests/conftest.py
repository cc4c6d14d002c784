"""Fixtures of the many-machines tests: a Redis reached over TCP, simulated hosts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.pgbouncer import pgbouncer_binary
from tests.support.processes import Host
from tests.support.servers import private_redis


@pytest.fixture
def tcp_redis_url(tmp_path: Path) -> Iterator[str]:
    """``redis://:PASSWORD@127.0.0.1:PORT/0``: a private, password-protected ``redis-server``
    on a free loopback port, for this test alone (not the shared server's leased database:
    the test wants a password, and a server no other session's workers reach)."""
    with private_redis(tmp_path / "redis", password=True) as server:
        yield server.url


@pytest.fixture
def hosts(tmp_path: Path) -> Callable[[str], Host]:
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
