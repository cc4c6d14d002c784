"""Fixtures of the fault tests: a private Redis, a worker fleet, one synthetic dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.configs import write_blobs
from tests.support.processes import Fleet
from tests.support.servers import RedisServer, private_redis

FAST = ("--lease-seconds", "2", "--reconcile-every", "0.5")


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12,000 x 128 float32, 10 classes: ~0.1 s per epoch with 512 hidden units."""
    return write_blobs(tmp_path_factory.mktemp("data") / "blobs.npz", n=12_000, d=128,
                       classes=10, spread=1.0, noise=8.0)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with private_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite in tmp_path; ``parametrize("db", ["sqlite", "postgresql"], indirect=True)``
    runs a test on both backends."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'sweep.db'}"


@pytest.fixture
def fleet(tmp_path: Path, db: str, redis_server: RedisServer) -> Iterator[Fleet]:
    """Worker processes on the test's database and Redis, with 2 s leases."""
    f = Fleet(tmp_path, db, redis_server.url, *FAST)
    yield f
    f.stop_all()
