"""What a database says about itself: whether it is an hpsweep database, and its fingerprint.

Every hpsweep database holds one random fingerprint (a uuid4 hex, table ``hpsweep_meta``),
given when its schema is created, or when a writing command next opens a database made by
an older version. Jobs carry it, so a worker pointed at another database can refuse them
(DESIGN principle 7). This module knows only the models: ``storage.db`` calls it.
"""

from __future__ import annotations

import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import URL, Connection, Engine, insert, inspect, select
from sqlalchemy.exc import IntegrityError, ProgrammingError

from storage.models import Meta

FINGERPRINT = "fingerprint"
# Tables every hpsweep database has had since the first version: their presence, not the
# fingerprint's, says "an hpsweep database" (older ones have no hpsweep_meta yet).
CORE_TABLES = ("sweeps", "stages", "trials")


@dataclass(frozen=True)
class DatabaseIdentity:
    """Which database a job belongs to: its fingerprint and a description for people."""

    fingerprint: str
    description: str  # the URL, password masked, a SQLite path made absolute


def describe(url: URL) -> str:
    """``url`` for messages: password masked, query dropped, a SQLite path made absolute
    (``sqlite:///hpsweep.db`` means a different file in every folder)."""
    url = url.set(query={})
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        url = url.set(database=str(Path(url.database).expanduser().absolute()))
    return url.render_as_string(hide_password=True)


def is_hpsweep_database(conn: Connection) -> bool:
    names = set(inspect(conn).get_table_names())
    return all(t in names for t in CORE_TABLES)


def read_fingerprint(conn: Connection) -> str | None:
    """The stored fingerprint, or None (no ``hpsweep_meta`` table, or no row yet)."""
    if not inspect(conn).has_table(Meta.__tablename__):
        return None
    return conn.scalar(select(Meta.value).where(Meta.key == FINGERPRINT))


def ensure_fingerprint(engine: Engine, attempts: int = 5) -> str:
    """The database's fingerprint, created (with its table) when missing.

    Safe when several processes race: the key is the primary key, so one insert wins and
    the others fail, retry, and read the winner's value (same for the table itself).
    """
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                Meta.__table__.create(conn, checkfirst=True)
                return read_fingerprint(conn) or insert_fingerprint(conn)
        except (IntegrityError, ProgrammingError):  # lost a race (PG: duplicate row/table)
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def insert_fingerprint(conn: Connection) -> str:
    """Give the database a new fingerprint (its ``hpsweep_meta`` has none)."""
    found = uuid.uuid4().hex
    conn.execute(insert(Meta).values(key=FINGERPRINT, value=found))
    return found


_IDENTITIES: weakref.WeakKeyDictionary[Engine, DatabaseIdentity] = weakref.WeakKeyDictionary()


def identity(engine: Engine) -> DatabaseIdentity:
    """The identity jobs enqueued for ``engine``'s database carry (read once per engine).

    Only for writers: it stores a fingerprint in a database that has none yet.
    """
    found = _IDENTITIES.get(engine)
    if found is None:
        found = DatabaseIdentity(ensure_fingerprint(engine), describe(engine.url))
        _IDENTITIES[engine] = found
    return found
