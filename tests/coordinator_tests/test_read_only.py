"""Looking never writes (DESIGN principle 6): read commands create no file and no table;
pointed at something that is not an hpsweep database they say so and exit 2."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from storage.db import make_engine
from tests.coordinator_tests.finished_sweep import cli
from tests.support.configs import write_config
from tests.support.db import rows, scalar
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration

# Every command that only looks (ensemble writes its own ``ensembles`` row, nothing else),
# with the file or folder it would write its output to, if any.
READ_COMMANDS = [
    ("status",),
    ("status", "--watch", "--interval", "0.1"),
    ("best",),
    ("query", "SELECT 1"),
    ("export",),
    ("export", "--output", "out.csv"),
    ("plot", "--out", "plots"),
    ("ensemble",),
]


def tables(url: str) -> list[str]:
    """The tables of the database at ``url``, read through a plain SQLAlchemy engine."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        return sorted(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_missing_sqlite_file_exits_2_and_creates_nothing(
        args, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    res = cli(*args, "--db", "sqlite:///nothing-here.db")
    assert res.exit_code == 2, res.output
    assert "no such file" in res.output and str(tmp_path / "nothing-here.db") in res.output
    assert list(tmp_path.iterdir()) == []


def test_default_database_missing_exits_2_and_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPSWEEP_DB", raising=False)
    res = cli("status")
    assert res.exit_code == 2, res.output
    assert "hpsweep.db" in res.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_postgres_without_hpsweep_tables_exits_2_and_creates_no_table(
        args, pg_url, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    res = cli(*args, "--db", pg_url)
    assert res.exit_code == 2, res.output
    assert "not an hpsweep database" in res.output
    assert tables(pg_url) == []
    assert list(tmp_path.iterdir()) == []


def test_postgres_database_that_does_not_exist_exits_2(pg_url: str) -> None:
    res = cli("status", "--db", pg_url + "_nope")
    assert res.exit_code == 2, res.output
    assert "does not exist" in res.output


def test_a_file_that_is_not_sqlite_exits_2_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"my notes, not a database\n" * 100)
    res = cli("status", "--db", f"sqlite:///{path}")
    assert res.exit_code == 2, res.output
    assert "not an hpsweep database" in res.output
    assert path.read_bytes() == b"my notes, not a database\n" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_sqlite_without_hpsweep_tables_exits_2_and_creates_no_table(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE mine (x)").connection.close()
    for args in READ_COMMANDS:
        res = cli(*args, "--db", f"sqlite:///{path}")
        assert res.exit_code == 2, (args, res.output)
        assert "not an hpsweep database" in res.output
    assert tables(f"sqlite:///{path}") == ["mine"]


def dump(url: str) -> list[tuple]:
    """Every row of every table except ``ensembles`` (which ``ensemble`` adds to)."""
    engine = make_engine(url, readonly=True, any_revision=True)
    names = [t for t in inspect(engine).get_table_names() if t != "ensembles"]
    out = [(t, *r) for t in sorted(names) for r in rows(engine, f"SELECT * FROM {t}")]
    engine.dispose()
    return sorted(out, key=repr)


@pytest.mark.parametrize("old", [False, True], ids=["current", "older-version"])
def test_read_commands_on_a_real_database_work_and_write_nothing(
        template, redis_url, tmp_path, monkeypatch, old) -> None:  # type: ignore[no-untyped-def]
    """On an older database (before fingerprints and Alembic) they exit 2 and say what to run."""
    db, name = template.copy(redis_url, tmp_path)
    if old:
        with make_engine(db).begin() as conn:
            conn.execute(text("DROP TABLE hpsweep_meta"))
            conn.execute(text("DROP TABLE alembic_version"))
    before, schema = dump(db), tables(db)
    monkeypatch.chdir(tmp_path)
    for args in READ_COMMANDS:
        if args[0] == "plot" or (old and args[0] == "ensemble"):
            continue  # plot needs matplotlib (its own tests cover it); ensemble writes
        res = cli(*args, "--db", db) if args[0] == "query" else cli(*args, name, "--db", db)
        if old:
            assert res.exit_code == 2, (args, res.output)
            assert "database is at revision 0001_baseline" in res.output, res.output
            assert "run `hpsweep db upgrade`" in res.output
        else:
            assert res.exit_code == 0, (args, res.output)
    assert dump(db) == before
    assert tables(db) == schema
    assert scalar(make_engine(db, readonly=True, any_revision=True),
                  "SELECT COUNT(*) FROM ensembles") == (0 if old else 1)
    assert "hpsweep_meta" not in schema or not old


def test_read_processes_leave_no_file_behind(tmp_path: Path, redis_url: str) -> None:
    """SQLite creates ``-wal`` and ``-shm`` files beside a WAL database while it is open;
    a reader must remove them on exit (a ``mode=ro`` connection could not)."""
    db = f"sqlite:///{tmp_path / 'hpsweep.db'}"
    cfg = write_config(tmp_path / "c.yaml")
    for args in (["launch", str(cfg), "--redis", redis_url], ["status"], ["best"],
                 ["query", "SELECT COUNT(*) FROM trials"], ["export"]):
        out = subprocess.run([sys.executable, "-m", "coordinator.cli", *args, "--db", db],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "hpsweep.db"], args


def test_postgres_read_commands_work_and_create_nothing(pg_url: str, redis_url: str,
                                                        tmp_path: Path) -> None:
    res = cli("launch", str(write_config(tmp_path / "c.yaml")), "--db", pg_url, "--redis",
              redis_url)
    assert res.exit_code == 0, res.output
    before, schema = dump(pg_url), tables(pg_url)
    for args in (["status"], ["best"], ["query", "SELECT COUNT(*) FROM trials"], ["export"]):
        res = cli(*args, "--db", pg_url)
        assert res.exit_code == 0, (args, res.output)
    assert dump(pg_url) == before and tables(pg_url) == schema


def test_read_only_engines_refuse_writes(db_url: str) -> None:
    make_engine(db_url).dispose()
    engine = make_engine(db_url, readonly=True)
    with pytest.raises(DBAPIError, match=r"(?i)read.?only"), engine.begin() as conn:
        conn.execute(text("DELETE FROM hpsweep_meta"))
    assert scalar(engine, "SELECT COUNT(*) FROM hpsweep_meta") == 1


def test_a_missing_folder_is_no_such_file(tmp_path: Path) -> None:
    res = cli("best", "--db", f"sqlite:///{tmp_path / 'no' / 'such.db'}")
    assert res.exit_code == 2, res.output
    assert "no such file" in res.output
    assert list(tmp_path.iterdir()) == []
