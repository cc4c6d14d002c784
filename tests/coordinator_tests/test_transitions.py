"""Issue 11 item 1: every state transition of a sweep happens, whatever the interleaving.

Stage advance, stage close, sweep finish and cancel are serialised on the sweep's row
(``storage.sweeps.lock_sweep``). The tests below hold one transition's transaction open
while another starts, the exact interleaving that skipped the sweep's finish (a write
skew under READ COMMITTED), then let them race for real in many processes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator.config import load_config
from coordinator.control import cancel_sweep
from coordinator.launch import create_sweep, prepare_dataset
from coordinator.stages import _advance, advance
from storage.db import is_sqlite, make_engine
from tests.coordinator_tests.test_stages import finish, stage_id
from tests.helpers import rows, scalar, wait_for, write_config

pytestmark = pytest.mark.integration


def two_stage_sweep(tmp_path, engine: Engine, trials: tuple[int, int] = (4, 2),  # type: ignore[no-untyped-def]
                    quorum: float = 0.5) -> int:
    """A sweep whose stage 0 was advanced from its quorum: stage 0 'advanced' with
    stragglers open, stage 1 running; returns the sweep id."""
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=[
        {"trials": trials[0], "epochs": 1, "quorum": quorum},
        {"trials": trials[1], "epochs": 1}]))
    sid = create_sweep(engine, cfg, "q", prepare_dataset(cfg)).sweep_id
    s0 = stage_id(engine, sid, 0)
    finish(engine, sid, 0, range(int(trials[0] * quorum)))
    assert advance(engine, s0) is not None
    return sid


def _backend_waits_on_a_lock(engine: Engine) -> bool:
    return bool(scalar(engine, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = "
                               "current_database() AND wait_event_type = 'Lock'"))


def interleave(engine: Engine, first: Callable[[Session], Any],
               second: Callable[[], Any]) -> tuple[Any, Any]:
    """Run ``first`` in a transaction left open while ``second`` starts in a thread (until
    it ends or waits on a lock), then commit ``first`` and wait for ``second``."""
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(second=second()), daemon=True)
    with Session(engine, expire_on_commit=False) as s, s.begin():
        out["first"] = first(s)
        thread.start()
        if is_sqlite(engine):
            # SQLite's BEGIN IMMEDIATE makes `second` wait for the commit whatever
            # the code does (and a probe from here would wait too): give it a moment
            thread.join(0.5)
        else:
            assert wait_for(lambda: not thread.is_alive() or _backend_waits_on_a_lock(
                engine), timeout=60)
    thread.join(60)
    assert not thread.is_alive()
    return out["first"], out.get("second")


def test_closing_two_stages_at_once_finishes_the_sweep(tmp_path, db_url) -> None:  # type: ignore[no-untyped-def]
    """The write skew seen with 48 workers: stage 0's last straggler and stage 1's last
    trial end together; each closing transaction saw the other stage still open."""
    engine = make_engine(db_url)
    sid = two_stage_sweep(tmp_path, engine)
    s0, s1 = stage_id(engine, sid, 0), stage_id(engine, sid, 1)
    finish(engine, sid, 0, [2, 3])
    finish(engine, sid, 1, [0, 1])
    first, second = interleave(engine, lambda s: _advance(s, engine, s0),
                               lambda: advance(engine, s1))
    # exactly one of them finished the sweep (closing stage 0 alone returns None)
    assert [r.sweep_done for r in (first, second) if r is not None] == [True]
    assert rows(engine, "SELECT idx, status FROM stages WHERE sweep_id = :s ORDER BY idx",
                s=sid) == [(0, "done"), (1, "done")]
    assert scalar(engine, "SELECT status FROM sweeps WHERE id = :s", s=sid) == "done"
    assert scalar(engine, "SELECT finished_at FROM sweeps WHERE id = :s", s=sid) is not None


def test_cancel_while_the_next_stage_is_planned_cancels_it_too(tmp_path, db_url) -> None:  # type: ignore[no-untyped-def]
    """Cancel during the advancement that plans stage 1: stage 1 and its queued trials are
    cancelled as well, not left running (and queued) in a cancelled sweep."""
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=[
        {"trials": 4, "epochs": 1}, {"trials": 3, "epochs": 1}]))
    engine = make_engine(db_url)
    sid = create_sweep(engine, cfg, "q", prepare_dataset(cfg)).sweep_id
    s0 = stage_id(engine, sid, 0)
    finish(engine, sid, 0, range(4))
    planned, dropped = interleave(engine, lambda s: _advance(s, engine, s0),
                                  lambda: cancel_sweep(engine, None, sid))
    assert planned is not None and len(planned.trial_ids) == 3
    assert dropped == 3  # the cancel saw the planned stage
    assert scalar(engine, "SELECT status FROM sweeps WHERE id = :s", s=sid) == "cancelled"
    assert rows(engine, "SELECT idx, status FROM stages WHERE sweep_id = :s ORDER BY idx",
                s=sid) == [(0, "done"), (1, "cancelled")]
    assert scalar(engine, "SELECT COUNT(*) FROM trials WHERE sweep_id = :s AND status IN "
                          "('queued', 'running')", s=sid) == 0


def test_advance_after_cancel_plans_nothing(tmp_path, db_url) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=[
        {"trials": 4, "epochs": 1}, {"trials": 3, "epochs": 1}]))
    engine = make_engine(db_url)
    sid = create_sweep(engine, cfg, "q", prepare_dataset(cfg)).sweep_id
    s0 = stage_id(engine, sid, 0)
    finish(engine, sid, 0, range(4))

    def cancel_in(s: Session) -> None:
        from storage import sweeps as sweep_store
        from storage import trials as trial_store
        from storage.models import SweepStatus

        sweep_store.lock_sweep(s, sid)
        sweep_store.finish_sweep(s, sid, SweepStatus.CANCELLED.value)
        trial_store.cancel_unfinished(s, sid)

    _, planned = interleave(engine, cancel_in, lambda: advance(engine, s0))
    assert planned is None
    assert rows(engine, "SELECT idx, status FROM stages WHERE sweep_id = :s", s=sid) == [
        (0, "cancelled")]
