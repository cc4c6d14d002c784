"""Engines, units of work and the few dialect differences, in one place.

SQLite gets WAL, a 30 s busy timeout, foreign keys and ``BEGIN IMMEDIATE``
write transactions so that many local worker processes share one file (its engine
is made in ``storage.sqlite``); any connection is dropped after ``fork()``.
PostgreSQL gets pre-ping and a retry when the server drops connections. Nothing
else in the code base knows which dialect it talks to.
"""

from __future__ import annotations

import logging
import os
import random
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import (
    URL,
    Connection,
    Engine,
    Insert,
    Table,
    create_engine,
    event,
    literal_column,
    make_url,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from storage import meta

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_PATIENCE = 60.0  # seconds a unit of work keeps retrying a lost database (server restart)
PERMANENT_ERRORS = ("password authentication failed", "no pg_hba.conf entry", "does not exist",
                    "permission denied", "unsupported startup parameter")
# What the server or driver says when the URL names no database of any kind (exit 2)
NOT_A_DATABASE = ("file is not a database", "does not exist")


class StorageError(RuntimeError):
    """A database problem worth a clear message (bad URL, unreachable server...)."""


class BadDatabaseURL(StorageError):
    """The database URL is malformed or names an unsupported backend (bad input, exit 2)."""


class DatabaseNotFound(StorageError):
    """No hpsweep database at the URL: no such file, or no hpsweep tables (exit 2)."""


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and output."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is shown without its userinfo
        return url.split("@")[-1]


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def _dispose_after_fork(engine: Engine) -> None:
    ref = weakref.ref(engine)

    def _after_fork() -> None:
        eng = ref()
        if eng is not None:
            eng.dispose(close=False)  # never carry a connection across fork()

    os.register_at_fork(after_in_child=_after_fork)


PGBOUNCER_PARAM = "pgbouncer"  # ?pgbouncer=1: hpsweep talks to PgBouncer (transaction mode)


def _pgbouncer_flag(value: str | tuple[str, ...] | None) -> bool:
    if isinstance(value, tuple):
        value = value[-1]
    if value is None:
        return False
    flag = value.strip().lower()
    if flag not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise BadDatabaseURL(f"?{PGBOUNCER_PARAM}={value!r} in the database URL: use 1 or 0")
    return flag in ("1", "true", "yes", "on")


def _postgres_engine(parsed: URL, readonly: bool, pre_ping: bool = True) -> Engine:
    """The engine of a PostgreSQL URL, directly or through PgBouncer.

    Connection budget: a worker process uses connections for its trial's
    transactions, its lease keeper and its reconciler, each a short transaction; a
    pool of one kept connection plus one overflow holds at most one connection while
    idle and two while training (a third user waits a moment for a free one). The
    overflow lets the lease keeper renew while the trial's transaction waits on a row
    lock, so a lock queue cannot cost the attempt its lease.

    Through PgBouncer in transaction mode (``?pgbouncer=1``) consecutive
    transactions may run on different server sessions, so nothing may live in a
    session: no server-side prepared statements (psycopg prepares a query after
    five runs), no startup ``options`` (PgBouncer refuses them); PgBouncer's own
    ``idle_transaction_timeout`` then ends transactions a frozen worker left open,
    and read-only engines say ``BEGIN READ ONLY`` per transaction.

    ``pre_ping`` tests each pooled connection with a ``SELECT 1`` round trip before use,
    so that a connection a server restart closed is replaced unseen. A worker turns it
    off: its every unit of work runs in ``transact``, which retries a dropped
    connection anyway, and the ping was a third of a zero-work trial's server round
    trips (``benchmarks/coordination.py``: transactions per trial in ``pg_stat_database``).
    """
    pgbouncer = _pgbouncer_flag(parsed.query.get(PGBOUNCER_PARAM))
    args: dict[str, Any] = {"connect_timeout": 5}
    if pgbouncer:
        args["prepare_threshold"] = None
    else:
        # A worker frozen inside a transaction (SIGSTOP, a hung host) must not hold
        # its row locks for ever: the server ends such a session after a minute.
        args["options"] = "-c idle_in_transaction_session_timeout=60000"
        if readonly:
            args["options"] += " -c default_transaction_read_only=on"
    engine = create_engine(
        parsed.difference_update_query([PGBOUNCER_PARAM]), pool_pre_ping=pre_ping, pool_size=1,
        max_overflow=1, pool_timeout=60, pool_recycle=1800, connect_args=args)
    if pgbouncer and readonly:
        @event.listens_for(engine, "connect")
        def _read_only(dbapi_conn: Any, _record: object) -> None:
            dbapi_conn.read_only = True  # psycopg begins each transaction READ ONLY
    return engine


def make_engine(url: str, *, readonly: bool = False, create: bool = True,
                any_revision: bool = False, pre_ping: bool = True) -> Engine:
    """An engine for ``url``.

    ``create``: hpsweep's schema and the database's fingerprint are created where missing
    (commands that start sweeps). Otherwise, and always with ``readonly``, nothing is
    created, no file and no table: ``url`` must name an existing hpsweep database, else
    ``DatabaseNotFound`` (no such file, or no hpsweep tables). A writer (not ``readonly``)
    upgrades an older database to this version's schema (``storage.schema``); a reader
    refuses one (``SchemaOutdated``) and writes nothing. ``readonly`` engines also refuse
    writes at the connection level (SQLite ``query_only``, PostgreSQL read-only
    transactions). ``any_revision`` (with ``create=False``): neither upgrade nor refuse, for
    ``hpsweep db`` and tests that look at an old database. ``pre_ping=False`` (PostgreSQL):
    for callers whose every transaction runs in ``transact`` (workers); see
    ``_postgres_engine``.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises ArgumentError or ValueError
        raise BadDatabaseURL(f"not a database URL: {mask_url(url)!r} ({exc}); expected "
                             "sqlite:///file.db or postgresql+psycopg://user@host/db") from None
    backend = parsed.get_backend_name()
    creating = create and not readonly
    if backend == "sqlite":
        from storage.sqlite import sqlite_engine  # storage.sqlite builds on this module

        engine = sqlite_engine(url, creating, readonly)
    elif backend == "postgresql":
        engine = _postgres_engine(parsed, readonly, pre_ping)
    else:
        raise BadDatabaseURL(f"unsupported database {mask_url(url)!r}: use sqlite:/// or "
                           "postgresql+psycopg://")
    _dispose_after_fork(engine)
    from storage import schema  # storage.schema builds on this module

    if not creating:
        require_hpsweep_database(engine, url)
    if readonly and not any_revision:
        _prepare(engine, lambda: schema.require_head(engine))
    elif not any_revision:
        _prepare(engine, lambda: schema.upgrade(engine, create=creating))
    return engine


def require_hpsweep_database(engine: Engine, url: str | None = None) -> None:
    """Raise ``DatabaseNotFound`` unless ``engine`` holds hpsweep's tables (writes nothing)."""
    shown = mask_url(url or str(engine.url))

    def check() -> bool:
        try:
            with engine.connect() as conn:
                return meta.is_hpsweep_database(conn)
        except DBAPIError as exc:
            if any(s in str(exc.orig) for s in NOT_A_DATABASE):
                raise DatabaseNotFound(f"{shown}: not an hpsweep database "
                                       f"({_first_line(exc)})") from None
            raise

    if not _prepare(engine, check):
        raise DatabaseNotFound(f"{shown}: not an hpsweep database (no hpsweep tables). Give "
                               "the database's URL with --db or $HPSWEEP_DB, or launch a "
                               "sweep there first")


def _prepare(engine: Engine, step: Callable[[], T], attempts: int = 5) -> T:
    """``step()``, retried a few times on database errors (a server starting, a racing
    ``CREATE TABLE``); a clear ``StorageError`` if it keeps failing."""
    for attempt in range(attempts):
        try:
            return step()
        except DBAPIError as exc:
            if attempt == attempts - 1:
                raise StorageError(
                    f"cannot reach or prepare database {mask_url(str(engine.url))}: "
                    f"{_first_line(exc)}"
                ) from None
            time.sleep(0.2 + random.random() * 0.3)
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _is_transient(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    if any(s in text for s in PERMANENT_ERRORS):  # "connection ... failed: FATAL: password ..."
        return False
    return isinstance(exc, OperationalError) and any(
        s in text for s in ("database is locked", "server closed", "terminating connection",
                            "connection", "could not receive", "deadlock", "serialize",
                            "the database system is")  # starting up / shutting down
    )


def transact(engine: Engine, work: Callable[[Any], T], *, retries: int = 5,
             patience: float = RETRY_PATIENCE, core: bool = False) -> T:
    """Run ``work(session)`` as one transaction, retrying transient failures.

    ``core``: ``work`` gets a plain ``Connection`` instead of a ``Session``, for units
    of Core statements only on hot paths (an epoch's writes): ~50 us less per
    transaction, and a shorter hold of SQLite's write lock.

    Transient means "database is locked" on SQLite past its busy timeout, or a
    dropped or refused PostgreSQL connection. Retries go on for at least
    ``retries`` attempts and until ``patience`` seconds have passed, so a
    worker waits out a database server restart instead of failing its trial.
    ``work`` must be safe to re-run (it is: the failed attempt rolled back).
    """
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            if core:
                with engine.begin() as conn:
                    return work(conn)
            with Session(engine, expire_on_commit=False) as session, session.begin():
                return work(session)
        except DBAPIError as exc:
            out_of_time = time.monotonic() - started >= patience
            if (attempt >= retries and out_of_time) or not _is_transient(exc):
                raise
            delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
            attempt += 1
            log.warning("database busy or disconnected (%s); retry %d in %.2fs",
                        _first_line(exc), attempt, delay)
            time.sleep(delay)


def bind_of(s: Session | Connection) -> Engine:
    """The engine behind a unit of work (a ``Session``, or a ``Connection`` with ``core``)."""
    if isinstance(s, Connection):
        return s.engine
    bind = s.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def now_seconds(engine: Engine) -> ColumnElement[float]:
    """The database server's clock in epoch seconds, as an SQL expression.

    Leases are judged by this clock so a worker with a wrong clock cannot
    reap, or be reaped, early.
    """
    if is_sqlite(engine):
        return literal_column("((julianday('now') - 2440587.5) * 86400.0)")
    return literal_column("extract(epoch from clock_timestamp())::float8")


def upsert(engine: Engine, table: Table, rows: list[dict[str, Any]], keys: list[str]) -> Insert:
    """INSERT … ON CONFLICT (keys) DO UPDATE SET every other column."""
    dialect = sqlite if is_sqlite(engine) else postgresql
    stmt = dialect.insert(table).values(rows)
    cols = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
    return stmt.on_conflict_do_update(index_elements=keys, set_=cols)


_STATEMENTS: dict[tuple[str, Any], Any] = {}


def cached_statement(engine: Engine, key: Any, build: Callable[[], Any]) -> Any:
    """The statement ``build()`` makes, built once per dialect and ``key``.

    Hot paths (a trial's claim, each epoch's writes) execute prebuilt statements with
    bound parameters: building and coercing a statement costs far more than running it.
    """
    full = (engine.dialect.name, key)
    stmt = _STATEMENTS.get(full)
    if stmt is None:
        stmt = _STATEMENTS[full] = build()
    return stmt


def upsert_statement(engine: Engine, table: Table, keys: tuple[str, ...],
                     columns: tuple[str, ...]) -> Insert:
    """``upsert`` for rows given at execution (``session.execute(stmt, row)``), cached."""
    def build() -> Insert:
        dialect = sqlite if is_sqlite(engine) else postgresql
        stmt = dialect.insert(table)
        return stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={c: stmt.excluded[c] for c in columns if c not in keys})

    return cached_statement(engine, ("upsert", table.name, keys, columns), build)
