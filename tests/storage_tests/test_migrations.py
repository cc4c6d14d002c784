"""Schema upgrades (storage.schema, Alembic): a database written by 302906a, the last release
before Alembic, is upgraded in place by `hpsweep db upgrade` or any writer, without losing a
row; readers refuse it (exit 2) and change nothing; racing upgraders end at head once.

The fixtures (tests/storage_tests/fixtures, rebuilt by make_302906a.sh) were written by
302906a itself: a finished two-stage sweep in SQLite, and the DDL it creates on PostgreSQL
(the PostgreSQL database gets the SQLite file's rows).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, insert, inspect, make_url, select, text

from storage import schema
from storage.db import make_engine
from storage.models import Base
from tests.support.db import rows, scalar
from tests.support.pgbouncer import PgBouncer, pgbouncer_binary
from tests.support.processes import ROOT, Fleet

FIXTURES = Path(__file__).with_name("fixtures")
OLD_SQLITE_GZ = FIXTURES / "db_302906a.sqlite.gz"
OLD_PG_DDL = FIXTURES / "schema_302906a_pg.sql"
OLD_TABLES = ("boundary_flags", "checkpoints", "curves", "datasets", "ensembles", "params",
              "stage_ranges", "stages", "sweeps", "trials")
HEAD = "0004_flag_reason"


def hpsweep(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _unpack(path: Path) -> None:
    """The 302906a SQLite database, as 302906a left it, at ``path``."""
    with gzip.open(OLD_SQLITE_GZ) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)


def _load_pg(url: str, folder: Path) -> None:
    """302906a's PostgreSQL schema (its pg_dump), then the SQLite fixture's rows."""
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(OLD_PG_DDL.read_text())  # type: ignore[arg-type]  # a trusted script
    _unpack(folder / "rows.sqlite")
    source, target = create_engine(f"sqlite:///{folder / 'rows.sqlite'}"), create_engine(url)
    tables = MetaData()
    tables.reflect(target)
    with source.connect() as src, target.begin() as dst:
        for table in tables.sorted_tables:
            found = [dict(r._mapping) for r in src.execute(select(table).order_by(*table.c))]
            if found:
                dst.execute(insert(table), found)
            if "id" in table.c:  # rows came with their ids: move the sequence past them
                dst.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                 f"(SELECT MAX(id) FROM {table.name}))"))
    source.dispose()
    target.dispose()


@pytest.fixture
def old_db(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``db_url`` holding the 302906a sweep, as 302906a left it."""
    if db_url.startswith("sqlite"):
        _unpack(Path(db_url.removeprefix("sqlite:///")))
    else:
        _load_pg(db_url, tmp_path_factory.mktemp("rows"))
    return db_url


def counts(url: str) -> dict[str, int]:
    engine = create_engine(url)  # not make_engine: that would upgrade, or refuse
    found = {t: scalar(engine, f"SELECT COUNT(*) FROM {t}") for t in OLD_TABLES}
    engine.dispose()
    return found


def snapshot(url: str) -> object:
    """What a reader must leave unchanged: the SQLite folder's bytes; PostgreSQL's tables,
    columns and rows."""
    if url.startswith("sqlite"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    engine = create_engine(url)
    insp = inspect(engine)
    found = {t: ([c["name"] for c in insp.get_columns(t)],
                 sorted(map(repr, rows(engine, f"SELECT * FROM {t}"))))
             for t in insp.get_table_names()}
    engine.dispose()
    return found


def revision(url: str) -> str | None:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = schema.current(conn)
    engine.dispose()
    return found


def test_fixture_is_302906a_schema(old_db: str) -> None:
    assert revision(old_db) == "0001_baseline"
    assert counts(old_db)["trials"] == 6 and counts(old_db)["curves"] > 0


def test_read_commands_on_an_old_database_exit_2_and_change_nothing(old_db: str) -> None:
    before = snapshot(old_db)
    for args in (["status"], ["best"], ["query", "SELECT COUNT(*) FROM trials"]):
        out = hpsweep(*args, "--db", old_db)
        assert out.returncode == 2, (args, out.stderr)
        assert ("database is at revision 0001_baseline" in out.stderr
                and "run `hpsweep db upgrade`" in out.stderr), out.stderr
        assert "Traceback" not in out.stderr
    current = hpsweep("db", "current", "--db", old_db)
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == "0001_baseline"
    assert snapshot(old_db) == before


def test_upgrade_in_place_keeps_every_row_and_the_sweep_runs_on(
        old_db: str, redis_url: str, tmp_path: Path) -> None:
    before = counts(old_db)
    out = hpsweep("db", "upgrade", "--db", old_db)
    assert out.returncode == 0, out.stderr
    assert f"upgraded from 0001_baseline to {HEAD}" in out.stderr
    assert counts(old_db) == before
    assert hpsweep("db", "current", "--db", old_db).stdout.strip() == HEAD
    engine = make_engine(old_db, readonly=True, create=False)
    assert len(scalar(engine, "SELECT value FROM hpsweep_meta WHERE key = 'fingerprint'")) == 32
    assert rows(engine, "SELECT at_chance, chance_acc FROM stages") == [(None, None)] * 2
    status = hpsweep("status", "old", "--db", old_db)
    assert status.returncode == 0 and "done" in status.stdout, status.stderr
    best = hpsweep("best", "old", "--db", old_db)
    assert best.returncode == 0, best.stderr
    assert best.stdout.splitlines()[1].split()[:4] == ["5", "1", "2", "0.6746"]

    extended = hpsweep("extend", "old", "--trials", "2", "--epochs", "1", "--db", old_db,
                       "--redis", redis_url)
    assert extended.returncode == 0, extended.stderr
    Fleet(tmp_path, old_db, redis_url).drain()
    assert rows(engine, "SELECT status, COUNT(*) FROM trials WHERE id > 6 GROUP BY status") \
        == [("done", 2)]
    after = counts(old_db)
    assert after["trials"] == before["trials"] + 2 and after["stages"] == before["stages"] + 1
    engine.dispose()


def test_writers_upgrade_on_open(old_db: str) -> None:
    before = counts(old_db)
    make_engine(old_db, create=False).dispose()  # as a worker or `resume` opens it
    assert revision(old_db) == HEAD and counts(old_db) == before


UPGRADER = """
import sys, time
from pathlib import Path
from storage.schema import upgrade_at
go = Path(sys.argv[2])
while not go.exists():  # start together
    time.sleep(0.005)
print(upgrade_at(sys.argv[1])[0])
"""


def race_upgrades(url: str, folder: Path, n: int = 4) -> list[str]:
    """What ``n`` processes upgrading ``url`` at once each found (all must succeed)."""
    go = folder / "go"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", UPGRADER, url, str(go)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(n)]
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [err for _, err in outs]
    return sorted(out.strip() for out, _ in outs)


def assert_upgraded_once(url: str, found: list[str], before: dict[str, int]) -> None:
    # exactly one found the old revision and upgraded; the others found head
    assert found == ["0001_baseline"] + [HEAD] * (len(found) - 1)
    engine = create_engine(url)
    assert rows(engine, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert scalar(engine, "SELECT COUNT(*) FROM hpsweep_meta") == 1
    engine.dispose()
    assert counts(url) == before


def test_concurrent_upgrades_end_at_head_once(old_db: str, tmp_path: Path) -> None:
    before = counts(old_db)
    assert_upgraded_once(old_db, race_upgrades(old_db, tmp_path), before)


def test_concurrent_upgrades_through_pgbouncer(pg_url: str, tmp_path: Path) -> None:
    """Transaction pooling: the lock lives in the upgrade's transaction, not in a session."""

    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer not installed (apt-get install pgbouncer)")
    _load_pg(pg_url, tmp_path)
    before = counts(pg_url)
    parsed = make_url(pg_url)
    with PgBouncer(tmp_path / "pgbouncer", users=[str(parsed.username)], pool_size=2) as b:
        url = b.url(str(parsed.username), str(parsed.database))
        found = race_upgrades(url, tmp_path)
    assert_upgraded_once(pg_url, found, before)


def test_revisions_give_the_models_schema(db_url: str) -> None:
    """Replaying every revision from nothing gives what create_all gives a new database."""
    engine = create_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(schema.alembic_config(conn), "head")
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        assert schema.current(conn) == HEAD
    engine.dispose()


def test_a_new_database_is_created_at_head(db_url: str) -> None:
    make_engine(db_url).dispose()
    assert revision(db_url) == HEAD
    assert hpsweep("db", "current", "--db", db_url).stdout.strip() == HEAD


@pytest.mark.parametrize(("dropped", "expected"), [
    ((), HEAD),
    ((("boundary_flags", "reason"),), "0003_stage_chance"),
    ((("stages", "chance_acc"),), "0002_meta"),  # 0003 adds only chance_acc
    ((("stages", "at_chance"), ("hpsweep_meta", None)), "0001_baseline"),
])
def test_pre_alembic_databases_of_any_age_are_detected_and_upgraded(
        sqlite_url: str, dropped, expected: str) -> None:  # type: ignore[no-untyped-def]
    """A database today's code wrote before Alembic (no alembic_version) is stamped at the
    revision it matches and upgraded from there."""
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
        for table, column in dropped:
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}" if column
                              else f"DROP TABLE {table}"))
    assert revision(sqlite_url) == expected
    make_engine(sqlite_url, create=False).dispose()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()
    assert revision(sqlite_url) == HEAD


def test_a_database_from_a_newer_hpsweep_is_refused(sqlite_url: str) -> None:
    make_engine(sqlite_url).dispose()
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    for args in (["status"], ["db", "upgrade"]):
        out = hpsweep(*args, "--db", sqlite_url)
        assert out.returncode == 2 and "9999_future" in out.stderr, out.stderr
        assert "upgrade hpsweep" in out.stderr


def test_a_failed_upgrade_leaves_the_old_schema(old_db: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every revision runs in one transaction: one that fails half-way (here: 0003, after
    0002 created hpsweep_meta) leaves the database as it was, to be upgraded again."""
    import alembic.op

    def fail(*_: object, **__: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(alembic.op, "add_column", fail)
    before, tables = counts(old_db), schema_of(old_db)
    with pytest.raises(RuntimeError, match="disk full"):
        make_engine(old_db, create=False)
    assert revision(old_db) == "0001_baseline" and schema_of(old_db) == tables
    assert counts(old_db) == before
    monkeypatch.undo()
    make_engine(old_db, create=False).dispose()
    assert revision(old_db) == HEAD and counts(old_db) == before


def schema_of(url: str) -> dict[str, list[str]]:
    engine = create_engine(url)
    insp = inspect(engine)
    found = {t: sorted(c["name"] for c in insp.get_columns(t)) for t in insp.get_table_names()}
    engine.dispose()
    return found


def test_migrations_ship_in_the_package() -> None:
    """A non-editable install finds the revisions: they are packages found by setuptools."""
    from setuptools import find_packages

    found = find_packages(str(ROOT), include=["coordinator*", "worker*", "storage*"])
    assert {"storage.migrations", "storage.migrations.versions"} <= set(found)


def test_a_database_holding_only_alembic_version_gets_the_schema(db_url: str) -> None:
    """What a failed launch's clean-up left before it dropped alembic_version too."""
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(text(f"INSERT INTO alembic_version VALUES ('{HEAD}')"))
    engine.dispose()
    make_engine(db_url).dispose()
    assert revision(db_url) == HEAD
    assert set(OLD_TABLES) <= set(schema_of(db_url))
