"""The schema's version: Alembic revisions in ``storage/migrations``, run on our own engines.

A writer (``launch``, ``run``, ``resume``, ``extend``, ``worker``...) brings the database to
the head revision when it opens it: a new database gets ``create_all`` and is stamped at
head; an older one is upgraded in place. A reader never writes: on a database below head it
raises ``SchemaOutdated`` (exit 2, "run `hpsweep db upgrade`").

Databases written before Alembic have no ``alembic_version`` table; the revision they match
is read off their tables and columns (``detect``), stamped, and upgraded from there.

Several processes opening one database at once must not race the upgrade: it runs in one
transaction that first takes the database's write lock (SQLite ``BEGIN IMMEDIATE``, which
every writer engine issues) or a transaction-level advisory lock (PostgreSQL; released at
commit, so nothing is left in a session PgBouncer may hand to someone else), then reads the
revision again. DDL is transactional on both, so a failed upgrade leaves the old schema.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.orm import Session

from storage import meta
from storage.db import DatabaseNotFound, StorageError, is_sqlite, make_engine, mask_url
from storage.launching import restore_params_index
from storage.models import Base

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
UPGRADE_LOCK = 0x68707377  # the pg_advisory_xact_lock key of schema upgrades: "hpsw"
BASELINE = "0001_baseline"  # the schema of 302906a, the last release before Alembic
# What each revision after it gave a pre-Alembic database: (revision, table, its columns).
# Frozen: every database written since Alembic has alembic_version, so new revisions need
# no entry here.
DETECT = (
    ("0002_meta", "hpsweep_meta", set()),
    ("0003_stage_chance", "stages", {"at_chance", "chance_acc"}),
    ("0004_flag_reason", "boundary_flags", {"reason"}),
)


class SchemaOutdated(StorageError):
    """A reader met a database below this hpsweep's revision (bad input, exit 2)."""


class SchemaTooNew(StorageError):
    """The database is at a revision this hpsweep does not know (a newer hpsweep wrote it)."""


def alembic_config(conn: Connection | None = None) -> Config:
    """Alembic's configuration, no alembic.ini: our scripts; ``conn`` for env.py to run on."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    """The revisions, read once per process (parsing their files costs milliseconds)."""
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    found = _scripts().get_current_head()
    assert found is not None
    return found


def detect(conn: Connection) -> str | None:
    """The revision a database without ``alembic_version`` matches; None for no hpsweep
    tables. The last revision such that it and all before it are fully there; a later one
    may find some of its columns there already, and adds the others."""
    if not meta.is_hpsweep_database(conn):
        return None
    insp = inspect(conn)
    tables, found = set(insp.get_table_names()), BASELINE
    for revision, table, columns in DETECT:
        if table not in tables or not columns <= {c["name"] for c in insp.get_columns(table)}:
            break
        found = revision
    return found


def current(conn: Connection) -> str | None:
    """The database's revision (detected for a pre-Alembic one); None: no hpsweep tables
    (whatever ``alembic_version`` says: a failed launch may have left only that)."""
    if not meta.is_hpsweep_database(conn):
        return None
    if inspect(conn).has_table(VERSION_TABLE):
        found = MigrationContext.configure(conn).get_current_revision()
        if found is not None:
            return found
    return detect(conn)


def _known(revision: str, engine: Engine) -> None:
    if revision not in {s.revision for s in _scripts().walk_revisions()}:
        raise SchemaTooNew(f"{mask_url(str(engine.url))}: database is at revision {revision}, "
                           f"which this hpsweep does not know (its newest is {head()}); "
                           "a newer hpsweep wrote it: upgrade hpsweep")


def require_head(engine: Engine) -> None:
    """For readers: raise unless the database is at head (writes nothing)."""
    with engine.connect() as conn:
        found = current(conn)
    if found is None or found == head():
        return
    _known(found, engine)
    raise SchemaOutdated(f"{mask_url(str(engine.url))}: database is at revision {found}, "
                         f"this hpsweep reads {head()}: run `hpsweep db upgrade`")


def upgrade(engine: Engine, *, create: bool) -> tuple[str | None, str]:
    """Bring the database to head: (revision before, head). ``create``: a database without
    hpsweep tables gets the whole schema; otherwise ``DatabaseNotFound``."""
    with engine.connect() as conn:  # the common case: already at head, no lock taken
        found = current(conn)
    if found == head():
        return found, found
    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE, the write lock
        if not is_sqlite(engine):
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK})
        found = current(conn)  # again, under the lock: another process may have done it
        if found is None:
            if not create:
                raise DatabaseNotFound(f"{mask_url(str(engine.url))}: not an hpsweep "
                                       "database (no hpsweep tables)")
            _create(conn)
        elif found != head():
            _known(found, engine)
            cfg = alembic_config(conn)
            if not inspect(conn).has_table(VERSION_TABLE):
                command.stamp(cfg, found)
            command.upgrade(cfg, "head")
    return found, head()


def _create(conn: Connection) -> None:
    """A new database: today's tables at once (faster than replaying every revision; a
    test checks both give the same schema), stamped at head, with its fingerprint."""
    Base.metadata.create_all(conn)
    command.stamp(alembic_config(conn), "head")
    meta.insert_fingerprint(conn)


def revision_at(url: str) -> tuple[str, str]:
    """(the revision of the hpsweep database at ``url``, head); writes nothing."""
    engine = make_engine(url, readonly=True, create=False, any_revision=True)
    try:
        with engine.connect() as conn:
            found = current(conn)
        assert found is not None  # make_engine checked: hpsweep tables are there
        return found, head()
    finally:
        engine.dispose()


def upgrade_at(url: str) -> tuple[str | None, str]:
    """Upgrade the hpsweep database at ``url`` to head: (revision before, head). Also builds
    the params-by-name index again if a big launch was killed while it was dropped
    (``storage.launching``)."""
    engine = make_engine(url, create=False, any_revision=True)
    try:
        done = upgrade(engine, create=False)
        with Session(engine) as s, s.begin():
            restore_params_index(s)
        return done
    finally:
        engine.dispose()
