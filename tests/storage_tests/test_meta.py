"""The database's fingerprint: one per database, the same for every process that races to
create it, kept by older databases' upgrade, described without secrets."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, make_url, text
from sqlalchemy.pool import NullPool

from storage import meta
from storage.db import DatabaseNotFound, make_engine
from storage.schema import SchemaOutdated
from tests.support.db import rows, scalar, wait_for

PROCESSES = 6


def _create_and_read(url: str, barrier, out) -> None:  # type: ignore[no-untyped-def]
    barrier.wait(timeout=60)
    engine = make_engine(url)  # schema + fingerprint, all processes at once
    out.put(meta.identity(engine).fingerprint)
    engine.dispose()


def test_processes_creating_one_database_at_once_agree_on_its_fingerprint(db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")  # fork() in a threaded pytest can deadlock
    barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_create_and_read, args=(db_url, barrier, out))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    found = {out.get(timeout=5) for _ in procs}
    engine = make_engine(db_url, readonly=True)
    assert rows(engine, "SELECT key, value FROM hpsweep_meta") == [("fingerprint", *found)]


def test_a_process_that_loses_the_insert_race_reads_the_winners_fingerprint(engine: Engine) -> None:
    winner = "a" * 32
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM hpsweep_meta"))
    # The holder is another process: its own connection, outside the engine's pool (a
    # worker's pool allows two, which the loser and the probe below use).
    other = create_engine(engine.url, poolclass=NullPool)
    holder = other.connect()
    tx = holder.begin()
    holder.execute(text("INSERT INTO hpsweep_meta (key, value) VALUES ('fingerprint', :v)"),
                   {"v": winner})
    got: list[str] = []
    loser = threading.Thread(target=lambda: got.append(meta.ensure_fingerprint(engine)))
    loser.start()
    if engine.dialect.name == "postgresql":  # let the loser reach its conflicting insert
        assert wait_for(lambda: scalar(engine, "SELECT COUNT(*) FROM pg_locks WHERE NOT "
                                               "granted") > 0, 30)
    tx.commit()
    holder.close()
    other.dispose()
    loser.join(timeout=60)
    assert got == [winner]
    assert rows(engine, "SELECT value FROM hpsweep_meta") == [(winner,)]


def test_fingerprint_is_stable_and_each_database_has_its_own(tmp_path: Path) -> None:
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    first = meta.identity(make_engine(a)).fingerprint
    assert meta.identity(make_engine(a, create=False)).fingerprint == first  # a new process
    assert meta.identity(make_engine(b)).fingerprint != first
    assert len(first) == 32 and int(first, 16) >= 0


def test_an_older_database_gets_a_fingerprint_from_a_writer_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with make_engine(url).begin() as conn:  # as written before fingerprints (and Alembic)
        conn.execute(text("DROP TABLE hpsweep_meta"))
        conn.execute(text("DROP TABLE alembic_version"))
    with pytest.raises(SchemaOutdated, match="run `hpsweep db upgrade`"):
        make_engine(url, readonly=True)
    reader = make_engine(url, readonly=True, any_revision=True)
    with reader.connect() as conn:
        assert meta.read_fingerprint(conn) is None
        assert meta.is_hpsweep_database(conn)
    assert len(meta.identity(make_engine(url, create=False)).fingerprint) == 32
    with make_engine(url, readonly=True).connect() as conn:
        assert meta.read_fingerprint(conn) is not None


def test_not_creating_never_makes_a_file_or_table(tmp_path: Path, pg_url: str) -> None:
    with pytest.raises(DatabaseNotFound, match="no such file"):
        make_engine(f"sqlite:///{tmp_path / 'x.db'}", create=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DatabaseNotFound, match="not an hpsweep database"):
        make_engine(pg_url, create=False)
    plain = create_engine(pg_url)  # not make_engine: that would create the schema
    assert inspect(plain).get_table_names() == []
    plain.dispose()


@pytest.mark.parametrize(("url", "shown"), [
    ("sqlite:///hpsweep.db", f"sqlite:///{Path.cwd() / 'hpsweep.db'}"),
    ("sqlite:////data/x.db", "sqlite:////data/x.db"),
    ("postgresql+psycopg://u:secret@db.example:5432/sweeps?sslmode=require",
     "postgresql+psycopg://u:***@db.example:5432/sweeps"),
])
def test_description_is_absolute_and_masked(url: str, shown: str) -> None:
    assert meta.describe(make_url(url)) == shown
