"""Issue 11 item 1: every state transition of a sweep happens, whatever the interleaving.

Stage advance, stage close, sweep finish and cancel are serialised on the sweep's row
(``storage.transitions.lock_sweep``). The tests below hold one transition's transaction open
while another starts, the exact interleaving that skipped the sweep's finish (a write
skew under READ COMMITTED), then let them race for real in many processes.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from coordinator.config import load_config
from coordinator.control import cancel_sweep
from coordinator.launch import create_sweep, prepare_dataset
from coordinator.stages import _advance, advance
from storage.db import is_sqlite, make_engine
from tests.coordinator_tests.test_stages import finish, stage_id
from tests.support.configs import write_config
from tests.support.db import rows, scalar, wait_for

pytestmark = pytest.mark.integration


def first_stage_done(tmp_path: Path, engine: Engine) -> tuple[int, int]:
    """A sweep of 4 + 3 one-epoch trials whose stage 0 is all done, not yet advanced:
    (sweep id, stage 0's id)."""
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=[
        {"trials": 4, "epochs": 1}, {"trials": 3, "epochs": 1}]))
    sid = create_sweep(engine, cfg, "q", prepare_dataset(cfg)).sweep_id
    finish(engine, sid, 0, range(4))
    return sid, stage_id(engine, sid, 0)


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
    # Its own connection: the two transitions already hold the two a worker's pool allows.
    probe = create_engine(engine.url, poolclass=NullPool)
    try:
        return bool(scalar(probe, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = "
                                  "current_database() AND wait_event_type = 'Lock'"))
    finally:
        probe.dispose()


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


def test_closing_two_stages_at_once_finishes_the_sweep(tmp_path: Path, db_url: str) -> None:
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


def test_cancel_while_the_next_stage_is_planned_cancels_it_too(tmp_path: Path, db_url: str) -> None:
    """Cancel during the advancement that plans stage 1: stage 1 and its queued trials are
    cancelled as well, not left running (and queued) in a cancelled sweep."""
    engine = make_engine(db_url)
    sid, s0 = first_stage_done(tmp_path, engine)
    planned, dropped = interleave(engine, lambda s: _advance(s, engine, s0),
                                  lambda: cancel_sweep(engine, None, sid))
    assert planned is not None and len(planned.trial_ids) == 3
    assert dropped == 3  # the cancel saw the planned stage
    assert scalar(engine, "SELECT status FROM sweeps WHERE id = :s", s=sid) == "cancelled"
    assert rows(engine, "SELECT idx, status FROM stages WHERE sweep_id = :s ORDER BY idx",
                s=sid) == [(0, "done"), (1, "cancelled")]
    assert scalar(engine, "SELECT COUNT(*) FROM trials WHERE sweep_id = :s AND status IN "
                          "('queued', 'running')", s=sid) == 0


def test_cancel_closes_a_stage_whose_last_open_trials_it_drops(tmp_path: Path, db_url: str) -> None:
    engine = make_engine(db_url)
    sid = two_stage_sweep(tmp_path, engine)  # stage 0: stragglers 2 and 3 still queued
    finish(engine, sid, 1, [0, 1])
    assert cancel_sweep(engine, None, sid) == 2
    assert rows(engine, "SELECT idx, status FROM stages WHERE sweep_id = :s ORDER BY idx",
                s=sid) == [(0, "done"), (1, "cancelled")]


def test_advance_after_cancel_plans_nothing(tmp_path: Path, db_url: str) -> None:
    engine = make_engine(db_url)
    sid, s0 = first_stage_done(tmp_path, engine)

    def cancel_in(s: Session) -> None:
        from storage import transitions
        from storage.models import SweepStatus

        transitions.lock_sweep(s, sid)
        transitions.finish_sweep(s, sid, SweepStatus.CANCELLED.value)
        transitions.cancel_unfinished(s, sid)

    _, planned = interleave(engine, cancel_in, lambda: advance(engine, s0))
    assert planned is None
    assert rows(engine, "SELECT idx, status FROM stages WHERE sweep_id = :s", s=sid) == [
        (0, "cancelled")]


@pytest.mark.parametrize("last", ["straggler", "last_stage"])
def test_cancel_while_the_last_trial_finishes(tmp_path, db_url, last) -> None:  # type: ignore[no-untyped-def]
    """The last open trial's finishing transaction (``settle_stage``) and a cancel meet:
    whichever goes first, the sweep ends in one consistent state, nothing left open."""
    from storage import attempts, transitions

    engine = make_engine(db_url)
    sid = two_stage_sweep(tmp_path, engine)
    s0, s1 = stage_id(engine, sid, 0), stage_id(engine, sid, 1)
    claimed = {t: (tok, st) for t, tok, st in _claimed_open_trials(engine, sid)}
    # every trial but one is final; the one left is a stage 0 straggler or a stage 1 trial
    keep = max(t for t, (_, st) in claimed.items() if st == (s0 if last == "straggler" else s1))
    finish(engine, sid, 0, [2, 3] if last == "last_stage" else [2])
    finish(engine, sid, 1, [0, 1] if last == "straggler" else [0])
    for st in (s0, s1):  # what those trials' finishes (and jobs) did
        advance(engine, st)
    token, stage = claimed[keep]

    def finish_last(s: Session) -> bool:
        attempts.finish(s, engine, keep, token, "done")
        return transitions.settle_stage(s, stage)

    due, _ = interleave(engine, finish_last, lambda: cancel_sweep(engine, None, sid))
    if due:
        assert advance(engine, stage) is None  # the cancel came first: nothing to plan
    status = scalar(engine, "SELECT status FROM sweeps WHERE id = :s", s=sid)
    stages = rows(engine, "SELECT idx, status FROM stages WHERE sweep_id = :s ORDER BY idx",
                  s=sid)
    if last == "straggler":  # its finish closed stage 0 and finished the sweep first
        assert (status, stages) == ("done", [(0, "done"), (1, "done")])
    else:  # the last stage's advancement (a job) comes after the cancel
        assert status == "cancelled" and stages == [(0, "done"), (1, "cancelled")]
    assert scalar(engine, "SELECT COUNT(*) FROM trials WHERE sweep_id = :s AND status IN "
                          "('queued', 'running')", s=sid) == 0


ROUNDS = 20


def _finisher(db_url: str, rounds: list[tuple[int, str, int]], barrier, results) -> None:  # type: ignore[no-untyped-def]
    """One worker's finishing path, once per round, all finishers released together:
    the trial's final status (``worker.trainer.finish``), then the advancement job's work
    when the finish says it is due (``coordinator.jobs.advance_stage`` runs ``advance``)."""
    from worker.dataset_cache import DatasetCache
    from worker.trainer import TrialContext
    from worker.trainer import finish as finish_trial

    engine = make_engine(db_url, create=False)  # the parent made the schema
    ctx = TrialContext(engine=engine, worker="finisher", lease_seconds=60.0,
                       datasets=DatasetCache(None))
    for trial_id, token, stage in rounds:
        barrier.wait(timeout=120)
        if finish_trial(ctx, trial_id, token, "done", stage_id=stage):
            advance(engine, stage)
    results.put("ok")


def _claimed_open_trials(engine: Engine, sweep_id: int) -> list[tuple[int, str, int]]:
    """Claim every open trial of the sweep (as workers would); (id, token, stage id)."""
    import uuid

    from storage import attempts
    from storage.db import transact

    open_ = rows(engine, "SELECT id, stage_id FROM trials WHERE sweep_id = :s AND status = "
                         "'queued' ORDER BY id", s=sweep_id)
    out = []
    for tid, stage in open_:
        token = uuid.uuid4().hex
        assert transact(engine, lambda s, t=tid, k=token: attempts.claim(
            s, engine, t, k, "finisher", 60.0)) is not None
        out.append((tid, token, stage))
    return out


def test_last_trials_finishing_together_always_finish_the_sweep(tmp_path: Path,
                                                                db_url: str) -> None:
    """Real processes, released by a barrier, end the last trials of both stages at the
    same moment (stage 0's stragglers and all of stage 1), round after round."""
    engine = make_engine(db_url)
    sweeps, plan = [], []
    for _ in range(ROUNDS):
        sid = two_stage_sweep(tmp_path, engine, trials=(6, 4))
        sweeps.append(sid)
        plan.append(_claimed_open_trials(engine, sid))
    width = len(plan[0])
    assert width == 7 and all(len(p) == width for p in plan)  # 3 stragglers + 4
    ctx = mp.get_context("spawn")  # fork() in a threaded pytest can deadlock
    barrier, results = ctx.Barrier(width), ctx.Queue()
    procs = [ctx.Process(target=_finisher, args=(db_url, [p[i] for p in plan], barrier,
                                                 results), daemon=True) for i in range(width)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0] * width
    assert [results.get(timeout=5) for _ in procs] == ["ok"] * width
    assert rows(engine, "SELECT status, COUNT(*) FROM sweeps GROUP BY status") == [
        ("done", ROUNDS)]
    assert rows(engine, "SELECT idx, status, COUNT(*) FROM stages GROUP BY idx, status "
                        "ORDER BY idx") == [(0, "done", ROUNDS), (1, "done", ROUNDS)]
    assert scalar(engine, "SELECT COUNT(*) FROM trials WHERE status <> 'done'") == 0
