"""Servers for tests and benchmarks: private Redis processes, the shared Redis and
PostgreSQL on this machine, and a fresh PostgreSQL database per test or benchmark run.

Shared by tests/conftest.py, the fault and many-machines tests, and benchmarks/harness.py.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from tests.support.db import wait_for

LOCAL_REDIS = "redis://127.0.0.1:6379"
PG_ADMIN_URLS = ("postgresql://postgres@127.0.0.1:5432/test",
                 "postgresql://postgres@127.0.0.1:5432/postgres",
                 "postgresql://root@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_answers(url: str, timeout: float = 0.2) -> bool:
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=timeout).ping())
    except (RedisError, OSError):
        return False


def local_redis_answers() -> bool:
    """The shared server at 127.0.0.1:6379 is up."""
    return redis_answers(LOCAL_REDIS, timeout=1)


class RedisServer:
    """A private ``redis-server`` on a loopback port, without persistence, optionally behind
    a password (given on stdin, never in argv); kill it and start it again on the same port."""

    def __init__(self, directory: Path, port: int | None = None,
                 password: str | None = None) -> None:
        self.dir, self.port, self.password = directory, port or free_port(), password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        from coordinator.embedded import redis_server_binary

        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(  # the config on stdin ("-"): a password stays out of argv
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir), "-"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        assert self.proc.stdin is not None
        if self.password:
            self.proc.stdin.write(f"requirepass {self.password}\n".encode())
        self.proc.stdin.close()
        assert wait_for(self.answers, timeout), f"redis-server did not start on {self.port}"
        return self

    def answers(self) -> bool:
        return redis_answers(self.url)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def client(self) -> Redis:
        return Redis.from_url(self.url)


@contextlib.contextmanager
def private_redis(directory: Path, *, password: bool = False) -> Iterator[RedisServer]:
    """A started ``RedisServer`` for the block (with a random password if asked)."""
    server = RedisServer(directory, password=f"pw{uuid.uuid4().hex}" if password else None)
    try:
        yield server.start()
    finally:
        server.kill()


def pg_admin() -> tuple[Any, str] | tuple[None, None]:
    """An autocommit psycopg connection to the local PostgreSQL and its URL, or (None, None)
    when no server answers (or psycopg is missing)."""
    try:
        import psycopg
    except ImportError:
        return None, None
    for url in PG_ADMIN_URLS:
        with contextlib.suppress(psycopg.Error):
            return psycopg.connect(url, autocommit=True, connect_timeout=3), url
    return None, None


def postgres_answers() -> bool:
    admin, _ = pg_admin()
    if admin is None:
        return False
    admin.close()
    return True


@contextlib.contextmanager
def postgres_db(prefix: str = "hpsweep_test") -> Iterator[str]:
    """``postgresql+psycopg://`` URL of a fresh database on the local server, dropped after
    the block; ConnectionError when no server answers."""
    admin, admin_url = pg_admin()
    if admin is None or admin_url is None:
        raise ConnectionError("no PostgreSQL server at 127.0.0.1:5432")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    user = admin_url.split("//")[1].split("@")[0]
    try:
        yield f"postgresql+psycopg://{user}@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
