"""Exit codes as promised (2 bad input, 1 runtime), and a failed run/launch leaves nothing.

One error map (``coordinator.cli_errors``) turns library errors into exit codes; a
`run` or `launch` checks config, dataset and Redis before it creates the database,
and removes what it created if it fails anyway.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis
from sqlalchemy import create_engine, inspect, make_url
from sqlalchemy.pool import NullPool

from coordinator import launch as launch_mod
from coordinator.cli import main
from coordinator.cli_errors import cli_error
from coordinator.config import ConfigError, load_config
from coordinator.ensemble import EnsembleError, EnsembleUsageError
from coordinator.query import QueryError
from storage import sweeps as sweep_store
from storage.db import BadDatabaseURL, DatabaseNotFound, StorageError
from tests.support.configs import write_config
from tests.support.db import scalar
from tests.support.redis_lease import keys_besides_lease
from worker.data import DatasetError
from worker.queue import BadRedisURL, QueueError

pytestmark = pytest.mark.integration

REFUSED = "redis://127.0.0.1:1/0"  # valid, but nothing listens there


def invoke(*args: str, **kw):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), **kw)


def tables_left(db_url: str) -> list[str] | bool:
    """What a command left at ``db_url``: the SQLite file exists, or PostgreSQL tables."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        return Path(url.database or "").exists()
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def with_db(redis_url: str, db: str) -> str:
    """``redis_url`` pointing at database ``db`` (TCP or unix socket form)."""
    if redis_url.startswith("unix://"):
        return redis_url.split("?")[0] + f"?db={db}"
    return redis_url.rsplit("/", 1)[0] + f"/{db}"


@pytest.mark.parametrize(("exc", "code"), [
    (ConfigError(["c.yaml: stages: bad"]), 2), (DatasetError("bad csv"), 2),
    (QueryError("SQL error"), 2), (BadDatabaseURL("mysql"), 2), (DatabaseNotFound("none"), 2),
    (BadRedisURL("http"), 2), (EnsembleUsageError("no snapshots"), 2),
    (StorageError("server down"), 1), (QueueError("refused"), 1), (EnsembleError("no trial"), 1),
])
def test_the_error_map_sends_bad_input_to_2_and_runtime_failures_to_1(exc, code) -> None:  # type: ignore[no-untyped-def]
    mapped = cli_error(exc)
    assert mapped is not None and mapped.exit_code == code


def test_an_unexpected_error_keeps_its_traceback() -> None:
    assert cli_error(ZeroDivisionError("a bug")) is None


@pytest.mark.parametrize(("args", "expected"), [
    (("status", "--db", "mysql://me@localhost/results"), "unsupported database"),
    (("best", "x", "--db", "hpsweep.db"), "not a database URL"),
    (("query", "SELECT 1", "--db", "hpsweep.db"), "sqlite:///"),
    (("export", "--db", "postgres://"), "unsupported database"),
])
def test_a_bad_database_url_exits_2_without_a_traceback(args, expected) -> None:  # type: ignore[no-untyped-def]
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    assert expected in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("bad", ["http://127.0.0.1:6379/0", "DB99", "redis://127.0.0.1:6379/abc",
                                 "redis://127.0.0.1:99999/0", "redis://127.0.0.1:6379/-1"])
def test_launch_with_an_impossible_redis_url_exits_2_and_writes_nothing(
        tmp_path, db_url, redis_url, bad) -> None:  # type: ignore[no-untyped-def]
    bad = with_db(redis_url, "99") if bad == "DB99" else bad  # "DB index is out of range"
    res = invoke("launch", str(write_config(tmp_path / "c.yaml")), "--db", db_url,
                 "--redis", bad)
    assert res.exit_code == 2, res.output
    assert "bad Redis URL" in res.output and "Traceback" not in res.output
    assert not tables_left(db_url)
    assert keys_besides_lease(Redis.from_url(redis_url)) == []


def test_run_with_an_impossible_redis_url_exits_2_and_writes_nothing(
        tmp_path: Path, db_url: str, redis_url: str) -> None:
    res = invoke("run", str(write_config(tmp_path / "c.yaml")), "--db", db_url,
                 "--redis", with_db(redis_url, "99"), "--workers", "1")
    assert res.exit_code == 2, res.output
    assert "no such database" in res.output
    assert not tables_left(db_url)


def test_run_without_redis_exits_1_and_leaves_no_database(tmp_path: Path, db_url: str) -> None:
    res = invoke("run", str(write_config(tmp_path / "c.yaml")), "--db", db_url,
                 "--redis", REFUSED, "--workers", "1")
    assert res.exit_code == 1, res.output
    assert "cannot use Redis" in res.output and "Traceback" not in res.output
    assert not tables_left(db_url)


@pytest.mark.parametrize(("edit", "expected"), [
    ({"stages": [{"trials": 0, "epochs": 1}]}, "stages[0].trials"),
    ({"dataset": "missing.csv"}, "dataset"),
])
def test_run_with_bad_input_exits_2_and_leaves_no_database(tmp_path, db_url, edit,
                                                           expected) -> None:  # type: ignore[no-untyped-def]
    res = invoke("run", str(write_config(tmp_path / "c.yaml", **edit)), "--db", db_url,
                 "--redis", REFUSED, "--workers", "1")
    assert res.exit_code == 2, res.output
    assert expected in res.output
    assert not tables_left(db_url)


def test_launch_with_redis_down_saves_the_sweep_and_says_how_to_resume(
        tmp_path: Path, db_url: str) -> None:
    res = invoke("launch", str(write_config(tmp_path / "c.yaml")), "--db", db_url,
                 "--redis", REFUSED)
    assert res.exit_code == 0, res.output
    assert "hpsweep resume t" in res.output and "saved" in res.output
    engine = create_engine(db_url, poolclass=NullPool)
    assert scalar(engine, "SELECT COUNT(*) FROM trials WHERE status = 'queued'") == 6
    engine.dispose()


def _failing_add_trials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trials fail to insert after the dataset, sweep and stage rows were written in
    the same (first) transaction: a failure midway through a launch's one transaction.
    (A failure in a later batch of a big stage 0 keeps the saved sweep, ``launching``,
    for ``hpsweep resume``: tests/coordinator_tests/test_launch_stream.py.)"""

    def add_trials(*args, **kw):  # type: ignore[no-untyped-def]
        raise StorageError("disk full (injected)")

    monkeypatch.setattr(sweep_store, "add_trials", add_trials)


def test_a_launch_that_fails_midway_removes_the_database_it_created(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml"))
    dataset = launch_mod.prepare_dataset(cfg)
    _failing_add_trials(monkeypatch)
    with pytest.raises(StorageError, match="injected"):
        launch_mod.launch_new(db_url, None, cfg, "q", dataset)
    assert not tables_left(db_url)


def test_a_launch_that_fails_midway_keeps_an_existing_database_and_writes_nothing(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml"))
    dataset = launch_mod.prepare_dataset(cfg)
    engine, _ = launch_mod.launch_new(db_url, None, cfg, "q", dataset)
    _failing_add_trials(monkeypatch)
    with pytest.raises(StorageError, match="injected"):
        launch_mod.launch_new(db_url, None, cfg, "q", dataset)
    assert tables_left(db_url)
    # one transaction: the failed launch left no sweep, stage or trial of its own
    assert scalar(engine, "SELECT COUNT(*) FROM sweeps") == 1
    assert scalar(engine, "SELECT COUNT(*) FROM stages") == 1
    assert scalar(engine, "SELECT COUNT(*) FROM trials") == 6
    engine.dispose()


def test_a_failed_launch_never_removes_a_sweep_another_launch_saved_meanwhile(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both launches found no database; the other one saved its sweep before this one
    failed: the database stays, with the other sweep in it."""
    cfg = load_config(write_config(tmp_path / "c.yaml"))
    dataset = launch_mod.prepare_dataset(cfg)
    real = launch_mod.make_engine

    def other_launch_then_fail(url: str):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(launch_mod, "make_engine", real)  # the other launch is normal
        engine, _ = launch_mod.launch_new(url, None, cfg, "q", dataset)
        engine.dispose()
        raise StorageError("server went away (injected)")

    monkeypatch.setattr(launch_mod, "make_engine", other_launch_then_fail)
    with pytest.raises(StorageError, match="injected"):
        launch_mod.launch_new(db_url, None, cfg, "q", dataset)
    engine = real(db_url)
    assert scalar(engine, "SELECT COUNT(*) FROM trials") == 6
    engine.dispose()
