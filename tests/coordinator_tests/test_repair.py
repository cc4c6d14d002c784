"""Issue 11 item 1: reconcilers heal every lost transition, not only advancement.

A database is put by hand into the state a skipped transition leaves behind; both
``hpsweep resume`` and a worker's reconciler (a real ``hpsweep worker --burst``,
which reconciles once at start) bring the sweep to ``done``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from coordinator.config import load_config
from coordinator.launch import create_sweep, prepare_dataset
from coordinator.stages import advance
from storage.db import make_engine
from tests.coordinator_tests.finished_sweep import cli
from tests.coordinator_tests.test_stages import finish, stage_id
from tests.support.configs import write_config
from tests.support.db import rows, scalar
from tests.support.processes import Fleet

pytestmark = pytest.mark.integration

# what a lost transition leaves behind, applied to a finished 2-stage sweep
BROKEN = {
    # the write skew seen with 48 workers: both stages closed, the sweep never finished
    "stages_done_sweep_running": ["UPDATE sweeps SET status = 'running', finished_at = NULL"],
    # every trial of stage 0 ended, but no one closed it
    "trials_final_stage_advanced": [
        "UPDATE sweeps SET status = 'running', finished_at = NULL",
        "UPDATE stages SET status = 'advanced', finished_at = NULL WHERE idx = 0"],
    # every trial of the last stage ended, its advancement (flags, close) was lost
    "trials_final_last_stage_running": [
        "UPDATE sweeps SET status = 'running', finished_at = NULL",
        "DELETE FROM boundary_flags WHERE stage_id = (SELECT id FROM stages WHERE idx = 1)",
        "UPDATE stages SET status = 'running', finished_at = NULL WHERE idx = 1"],
}


def finished_sweep(tmp_path: Path, engine: Engine) -> int:
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=[
        {"trials": 4, "epochs": 1, "quorum": 0.5}, {"trials": 2, "epochs": 1}]))
    sid = create_sweep(engine, cfg, "hpsweep", prepare_dataset(cfg)).sweep_id
    finish(engine, sid, 0, range(4))
    advance(engine, stage_id(engine, sid, 0))
    finish(engine, sid, 1, range(2))
    assert advance(engine, stage_id(engine, sid, 1)).sweep_done  # type: ignore[union-attr]
    return sid


def break_it(engine: Engine, how: str) -> None:
    with engine.begin() as conn:
        for sql in BROKEN[how]:
            conn.execute(text(sql))
    assert scalar(engine, "SELECT status FROM sweeps") == "running"


def assert_done(engine: Engine) -> None:
    assert scalar(engine, "SELECT status FROM sweeps") == "done"
    assert scalar(engine, "SELECT finished_at FROM sweeps") is not None
    assert rows(engine, "SELECT idx, status FROM stages ORDER BY idx") == [(0, "done"),
                                                                         (1, "done")]
    assert scalar(engine, "SELECT COUNT(*) FROM stages") == 2  # nothing planned twice


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_resume_repairs_a_lost_transition(tmp_path, db_url, redis_url, how) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    finished_sweep(tmp_path, engine)
    break_it(engine, how)
    res = cli("resume", "t", "--db", db_url, "--redis", redis_url)
    assert res.exit_code == 0, res.output
    assert_done(engine)
    if how == "trials_final_last_stage_running":  # advanced (which finished it) in resume
        assert "re-advanced 1 stage(s)" in res.output
        assert scalar(engine, "SELECT COUNT(*) FROM boundary_flags") > 0
    else:
        assert "finished 1 sweep(s)" in res.output
    if how == "trials_final_stage_advanced":
        assert "closed 1 stage(s)" in res.output
    again = cli("resume", "t", "--db", db_url, "--redis", redis_url)
    assert "re-advanced 0 stage(s); repaired: closed 0 stage(s), finished 0 sweep(s)" in \
        again.output  # idempotent


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_a_worker_reconciler_repairs_a_lost_transition(tmp_path, db_url, redis_url,  # type: ignore[no-untyped-def]
                                                       how) -> None:
    engine = make_engine(db_url)
    finished_sweep(tmp_path, engine)
    break_it(engine, how)
    Fleet(tmp_path, db_url, redis_url).drain()
    assert_done(engine)


def test_resume_cancels_what_a_cancelled_sweep_left_queued(tmp_path: Path, db_url: str,
                                                           redis_url: str) -> None:
    """The cancel that raced an advancement (before transitions were serialised) left the
    planned stage running with queued trials in a cancelled sweep."""
    engine = make_engine(db_url)
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=[
        {"trials": 4, "epochs": 1}, {"trials": 3, "epochs": 1}]))
    sid = create_sweep(engine, cfg, "hpsweep", prepare_dataset(cfg)).sweep_id
    finish(engine, sid, 0, range(4))
    advance(engine, stage_id(engine, sid, 0))
    with engine.begin() as conn:
        conn.execute(text("UPDATE sweeps SET status = 'cancelled'"))
    res = cli("resume", "t", "--db", db_url, "--redis", redis_url)
    assert "cancelled 3 leftover trial(s)" in res.output, res.output
    assert rows(engine, "SELECT idx, status FROM stages ORDER BY idx") == [
        (0, "done"), (1, "cancelled")]
    assert scalar(engine, "SELECT COUNT(*) FROM trials WHERE status = 'queued'") == 0
