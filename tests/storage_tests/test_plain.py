"""The looking commands' plain DB-API reads: same answers as the storage functions,
no heavy imports, and the engine path whenever the plain one does not apply."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from coordinator.cli import main
from storage import retention as retention_store
from storage import sweeps as sweep_store
from storage import trials as trial_store
from storage.db import make_engine, transact
from storage.plain import open_reader
from tests.support.synthetic_sweep import build

pytestmark = pytest.mark.integration

# What a status/best read must not pay for: NumPy, the network code, the ORM
HEAVY = ("numpy", "sqlalchemy", "worker.nn.model", "worker.nn.layers", "worker.nn.training",
         "worker.nn.optim", "coordinator.config", "coordinator.refine", "yaml")


@pytest.fixture
def sweep_db(db_url: str) -> str:
    engine = make_engine(db_url)
    build(engine, 300, running=20)  # one sweep still running: queued trials, open stage
    build(engine, 200, name="second", seed=1)
    engine.dispose()
    return db_url


def _modules_after(args: list[str]) -> set[str]:
    """The modules a fresh interpreter holds after running ``hpsweep ARGS``."""
    code = ("import sys\nfrom coordinator.cli import main\n"
            "try:\n    main(sys.argv[1:], prog_name='hpsweep')\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print('MODULES', ' '.join(sorted(sys.modules)), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stderr.splitlines() if x.startswith("MODULES "))
    return set(line.split()[1:])


@pytest.mark.parametrize("command", [["status"], ["status", "synthetic"], ["best", "-k", "3"]])
def test_looking_imports_nothing_heavy(sweep_db: str, command: list[str]) -> None:
    loaded = _modules_after([*command, "--db", sweep_db])
    assert "storage.plain" in loaded  # the plain path ran
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
    assert heavy == []


def test_reader_answers_as_the_storage_functions(sweep_db: str) -> None:
    engine = make_engine(sweep_db, readonly=True, create=False)
    reader = open_reader(sweep_db)
    assert reader is not None
    with reader:
        for key in (1, "1", "synthetic", "second", "nope", 99):
            assert _plain(reader.get_sweep(key)) == _plain(
                transact(engine, lambda s, k=key: sweep_store.get_sweep(s, k)))
        assert reader.latest_sweep().name == "second"
        for sweep_id in (1, 2):
            stages = transact(engine, lambda s, i=sweep_id: sweep_store.stages_of(s, i))
            assert [_plain(x) for x in reader.stages_of(sweep_id)] == [_plain(x) for x in stages]
            for st in stages:
                want = transact(engine, lambda s, i=st.id: sweep_store.stage_ranges(s, i))
                assert _ranges(reader.stage_ranges(st.id)) == _ranges(want)
                want_best = transact(engine, lambda s, i=sweep_id, j=st.id:
                                     trial_store.best_trials(s, i, j, limit=4))
                assert [_plain(t) for t in reader.best_trials(sweep_id, st.id, limit=4)] == \
                    [_plain(t) for t in want_best]
            same = [(sweep_store.flags_of, reader.flags_of),
                    (sweep_store.chance_of, reader.chance_of),
                    (trial_store.status_counts, reader.status_counts),
                    (trial_store.best_score, reader.best_score),
                    (retention_store.stored_bytes, reader.stored_bytes)]
            for stored, plain in same:
                assert _plain(plain(sweep_id)) == _plain(
                    transact(engine, lambda s, f=stored, i=sweep_id: f(s, i)))
            want_best = transact(engine, lambda s, i=sweep_id:
                                 trial_store.best_trials(s, i, limit=7))
            assert [_plain(t) for t in reader.best_trials(sweep_id, limit=7)] == \
                [_plain(t) for t in want_best]
    engine.dispose()


def _plain(value):  # type: ignore[no-untyped-def]
    """Rows of either kind as comparable JSON (dataclasses and namedtuples alike)."""
    def fields(v):  # type: ignore[no-untyped-def]
        if hasattr(v, "_asdict"):
            return {k: fields(x) for k, x in v._asdict().items()}
        if hasattr(v, "__dataclass_fields__"):
            return {k: fields(getattr(v, k)) for k in v.__dataclass_fields__}
        if isinstance(v, list | tuple):
            return [fields(x) for x in v]
        if isinstance(v, dict):
            return {str(k): fields(x) for k, x in v.items()}
        return v

    return json.loads(json.dumps(fields(value), sort_keys=True))


def _ranges(rows: dict) -> dict:  # type: ignore[type-arg]
    return {p: {**r, "integer": bool(r["integer"])} for p, r in rows.items()}


def test_status_and_best_print_what_the_engine_path_prints(sweep_db: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    commands = [["status"], ["status", "synthetic"], ["best", "synthetic", "-k", "4"], ["best"]]
    plain = [runner.invoke(main, [*c, "--db", sweep_db]) for c in commands]
    monkeypatch.setattr("storage.plain.open_reader", lambda url: None)
    engine = [runner.invoke(main, [*c, "--db", sweep_db]) for c in commands]
    for a, b in zip(plain, engine, strict=True):
        assert (a.exit_code, a.output) == (b.exit_code, b.output)
        assert a.exit_code == 0 and ("stage" in a.output or "trial" in a.output)


def test_unusual_urls_take_the_engine_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    assert open_reader(f"sqlite:///{missing}") is None
    assert not missing.exists()  # looking created no file
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    assert open_reader(f"sqlite:///{other}") is None
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    assert open_reader(f"sqlite:///{garbage}") is None
    assert open_reader("sqlite://") is None
    assert open_reader("postgresql+psycopg://nobody@127.0.0.1:1/x") is None
    assert open_reader("mysql://x/y") is None
    runner = CliRunner()
    for url, says in ((f"sqlite:///{missing}", "no such file"),
                      (f"sqlite:///{other}", "not an hpsweep database")):
        result = runner.invoke(main, ["status", "--db", url])
        assert result.exit_code == 2 and says in result.output
    assert not missing.exists()


def test_reader_refuses_writes(sqlite_url: str) -> None:
    build(make_engine(sqlite_url), 20)
    reader = open_reader(sqlite_url)
    assert reader is not None
    with reader, pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader._rows("DELETE FROM trials")


def test_the_plain_reader_knows_the_schema_head() -> None:
    from storage import plain, schema

    assert schema.head() == plain.SCHEMA_HEAD
