"""The SQLite engine: one database file shared by many local worker processes.

Owns what only SQLite needs: refusing a file on a network filesystem, opening an
existing file without ever creating one, the connection pragmas (WAL, a 30 s busy
timeout, foreign keys, ``query_only`` for readers) and ``BEGIN IMMEDIATE`` write
transactions retried at a finer grain than SQLite's own busy handler.
``storage.db.make_engine`` is the entry point; nothing else calls this module's engine.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, make_url

from storage.db import DatabaseNotFound, StorageError, mask_url
from storage.fs import NETWORK_FILESYSTEMS, filesystem_type

BUSY_TIMEOUT_MS = 30_000


def check_sqlite_path(url: str) -> None:
    """Refuse a SQLite file on a network filesystem: its locks are not reliable."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return
    folder = Path(database).expanduser().absolute().parent
    kind = filesystem_type(folder)
    if kind in NETWORK_FILESYSTEMS:
        raise StorageError(
            f"SQLite database {database} is on a network filesystem ({kind}); SQLite locking "
            "is not safe there. Use PostgreSQL for workers on several machines: "
            "--db postgresql+psycopg://user@host/dbname"
        )
    if not folder.is_dir():
        raise StorageError(f"SQLite database folder {folder} does not exist")


def _setup_sqlite(engine: Engine, readonly: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite quirk)
        cur = dbapi_conn.cursor()
        if not readonly:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        if readonly:
            cur.execute("PRAGMA query_only=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads then writes gets SQLITE_BUSY at once,
        # skipping the busy timeout; IMMEDIATE takes the write lock up front.
        if readonly:
            conn.exec_driver_sql("BEGIN")
        elif not _begin_immediate(conn.connection.driver_connection):
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # raises the (wrapped) error, or wins


def _begin_immediate(raw: sqlite3.Connection) -> bool:
    """``BEGIN IMMEDIATE``, retried every 50 to 250 us while another process holds the
    write lock, for up to ``BUSY_TIMEOUT_MS``; False on any other error or past that.

    SQLite's own busy handler sleeps 1, 2, 5, 10, ... ms between tries, so two workers
    whose transactions hold the lock for 0.3 ms would wait over 1 ms for each other. The
    connection's busy timeout is off only for these tries; every other statement keeps it.
    """
    delay, deadline = 5e-5, time.monotonic() + BUSY_TIMEOUT_MS / 1000
    raw.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return True
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    return False
            time.sleep(delay)
            delay = min(delay * 2, 2.5e-4)
    finally:
        raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")



def sqlite_engine(url: str, creating: bool, readonly: bool) -> Engine:
    """Unless ``creating``, the file must exist: it is opened with ``mode=rw``, which never
    creates one (no race with a check). Readers get ``query_only``, not ``mode=ro``: a
    ``mode=ro`` connection cannot remove the ``-wal``/``-shm`` files it creates on opening
    a WAL database, so looking would leave two files behind; ``mode=rw`` removes them when
    the last connection closes (and a write-protected file still opens, read-only)."""
    database = make_url(url).database
    path = Path(database).expanduser().absolute() if database and database != ":memory:" \
        else None
    if path is not None and not creating and not path.is_file():
        raise DatabaseNotFound(f"no such file: {path} (--db {mask_url(url)}). Launch a sweep "
                               "there first, or give an existing database's URL with --db or "
                               "$HPSWEEP_DB")
    check_sqlite_path(url)
    if path is not None and not creating:
        uri = f"file:{quote(str(path))}?mode=rw"

        def connect() -> sqlite3.Connection:  # the engine keeps the user's URL for messages
            return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                                   check_same_thread=False)  # as pysqlite does for a file

        engine = create_engine(url, creator=connect)
    else:
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
    _setup_sqlite(engine, readonly)
    return engine
