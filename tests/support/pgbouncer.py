"""A private PgBouncer in transaction mode in front of the local PostgreSQL.

Used by the PgBouncer tests and ``benchmarks/scale_workers.py``: its own config
and auth file in a folder of the caller's, a free loopback port, no Unix socket.
PgBouncer refuses to run as root, so as root it drops to ``nobody`` (it reads its
files before that).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.support.servers import free_port

CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
# what a worker logs when it cannot get or keep a database connection (not a deadlock or
# serialization retry: those are about locks, not connections)
CONNECTION_ERRORS = re.compile(
    r"too many clients|remaining connection slots|too many connections|"
    r"connection (?:to server )?.*failed|server closed|terminating connection|"
    r"prepared statement|unsupported startup parameter|query_wait_timeout|QueuePool limit",
    re.I)


def pgbouncer_binary() -> str | None:
    """The ``pgbouncer`` executable (PATH, then Debian's /usr/sbin), or None."""
    found = shutil.which("pgbouncer")
    return found or next((c for c in CANDIDATES if os.access(c, os.X_OK)), None)


@dataclass
class PgBouncer:
    """``with PgBouncer(folder, users=[...], pool_size=4) as bouncer:`` serves
    ``bouncer.url(user, dbname)`` until the block ends.

    ``pool_size`` is both ``default_pool_size`` and ``max_db_connections``: the
    server never sees more connections per database than that.
    """

    folder: Path
    users: list[str]
    pool_size: int = 4
    max_clients: int = 1000
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "pgbouncer.log"

    def url(self, user: str, dbname: str) -> str:
        return (f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{dbname}"
                "?pgbouncer=1")

    def config(self) -> str:
        return f"""\
[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.folder / 'users.txt'}
pool_mode = transaction
default_pool_size = {self.pool_size}
max_db_connections = {self.pool_size}
max_client_conn = {self.max_clients}
idle_transaction_timeout = 60
query_wait_timeout = 300
"""

    def __enter__(self) -> PgBouncer:
        binary = pgbouncer_binary()
        if binary is None:
            raise FileNotFoundError("pgbouncer is not installed (apt-get install pgbouncer)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        (self.folder / "users.txt").write_text("".join(f'"{u}" ""\n' for u in self.users))
        ini = self.folder / "pgbouncer.ini"
        ini.write_text(self.config())
        as_user = ["-u", "nobody"] if os.geteuid() == 0 else []
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([binary, *as_user, str(ini)], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: immediate shutdown (SIGINT waits for clients)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
