"""Fixtures of the fault tests: a private Redis, a worker fleet, one synthetic dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.support import FAST, Fleet, RedisServer, write_dataset


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12,000 x 128 float32, 10 classes: ~0.1 s per epoch with 512 hidden units."""
    return write_dataset(tmp_path_factory.mktemp("data") / "blobs.npz")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


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
