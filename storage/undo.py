"""Leave nothing behind: undo the database a failed command created.

A ``launch`` or ``run`` that fails before its sweep is saved must not leave a new
SQLite file, or hpsweep tables in a PostgreSQL database that had none. Only what
was not there before is removed: a database that already held hpsweep tables is
never touched, and neither is one where a concurrent launch saved a sweep in the
meantime (checked under the database's write lock just before removing).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, inspect, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from storage.db import mask_url
from storage.models import Base

log = logging.getLogger(__name__)

SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")
MARKER_TABLE = "sweeps"  # a database with this table is an hpsweep database: never removed


def _backend(url: str) -> str | None:
    try:
        return make_url(url).get_backend_name()
    except ArgumentError:  # make_engine reports it
        return None


def _sqlite_file(url: str) -> Path | None:
    if _backend(url) != "sqlite":
        return None
    database = make_url(url).database
    if database in (None, "", ":memory:"):
        return None
    return Path(database).expanduser().absolute()


def _has_schema(url: str) -> bool:
    """Whether ``url`` already holds something we must keep (True when unsure)."""
    backend = _backend(url)
    if backend == "sqlite":
        path = _sqlite_file(url)
        return path is None or path.exists()
    if backend != "postgresql":  # not a URL we open: make_engine refuses it
        return True
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        return inspect(engine).has_table(MARKER_TABLE)
    except SQLAlchemyError:  # unreachable: the command itself reports it; remove nothing
        return True
    finally:
        engine.dispose()


def _remove(url: str, engine: Engine | None) -> None:
    if engine is not None:
        engine.dispose()
    backend = _backend(url)
    try:
        if backend == "sqlite":
            _remove_sqlite(url)
        elif backend == "postgresql":
            _drop_tables(url)
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:  # the original error matters more
        log.warning("could not remove what this command created in %s: %s", mask_url(url), exc)


def _remove_sqlite(url: str) -> None:
    """Delete the new file, unless another launch saved a sweep in it meanwhile."""
    path = _sqlite_file(url)
    if path is None or not path.exists():
        return
    raw = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    try:
        raw.execute("BEGIN IMMEDIATE")  # waits for a writer in flight, then sees its work
        try:
            keep = raw.execute(f"SELECT 1 FROM {MARKER_TABLE} LIMIT 1").fetchone() is not None
        except sqlite3.OperationalError:  # no such table: the schema was never finished
            keep = False
        raw.execute("ROLLBACK")
    finally:
        raw.close()
    if not keep:
        for suffix in SQLITE_SIDE_FILES:
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def _drop_tables(url: str) -> None:
    """Drop the tables this command created, unless another launch saved a sweep in them
    meanwhile (checked under a lock that waits for any writer in flight)."""
    dropper = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with dropper.begin() as conn:
            if inspect(conn).has_table(MARKER_TABLE):
                conn.exec_driver_sql(f"LOCK TABLE {MARKER_TABLE} IN ACCESS EXCLUSIVE MODE")
                if conn.exec_driver_sql(f"SELECT 1 FROM {MARKER_TABLE} LIMIT 1").first():
                    return
            Base.metadata.drop_all(conn)  # DDL is transactional on PostgreSQL
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")  # storage.schema's
    finally:
        dropper.dispose()


@contextmanager
def removed_on_failure(url: str) -> Iterator[Callable[[Engine], Engine]]:
    """Run the block; if it raises and ``url`` held no hpsweep database before it,
    remove what the block created (the SQLite file, or the tables) and re-raise.

    The block registers the engine it opens with the callable it is given, so the
    engine is disposed before its file is removed.
    """
    existed = _has_schema(url)
    opened: list[Engine] = []

    def track(engine: Engine) -> Engine:
        opened.append(engine)
        return engine

    try:
        yield track
    except BaseException:
        if not existed:
            _remove(url, opened[-1] if opened else None)
        raise
