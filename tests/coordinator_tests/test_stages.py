"""Stage advancement with a quorum: plan early, close late, finish the sweep last."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from coordinator.config import load_config
from coordinator.launch import create_sweep, prepare_dataset
from coordinator.stages import advance
from storage.db import make_engine
from tests.support.configs import write_config
from tests.support.db import rows, scalar

pytestmark = pytest.mark.integration


def finish(engine, sweep_id: int, stage_idx: int, trial_idxs, status: str = "done") -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(text("""
            UPDATE trials SET status = :st, best_val_acc = 0.5 + idx * 0.01, best_val_loss = 1.0
            WHERE sweep_id = :s AND idx IN ({}) AND stage_id =
              (SELECT id FROM stages WHERE sweep_id = :s AND idx = :i)""".format(
            ",".join(str(int(i)) for i in trial_idxs))), {"st": status, "s": sweep_id,
                                                         "i": stage_idx})


def stage_id(engine: Engine, sweep_id: int, idx: int) -> int:
    return scalar(engine, "SELECT id FROM stages WHERE sweep_id = :s AND idx = :i",
                  s=sweep_id, i=idx)


@pytest.fixture
def sweep(tmp_path, db_url):  # type: ignore[no-untyped-def]
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=[
        {"trials": 10, "epochs": 1, "quorum": 0.8, "carry": 2},
        {"trials": 4, "epochs": 2}]))
    engine = make_engine(db_url)
    made = create_sweep(engine, cfg, "q", prepare_dataset(cfg))
    return engine, made.sweep_id


def test_next_stage_is_planned_from_the_quorum_while_stragglers_run(sweep) -> None:  # type: ignore[no-untyped-def]
    engine, sid = sweep
    s0 = stage_id(engine, sid, 0)
    assert scalar(engine, "SELECT quorum FROM stages WHERE id = :i", i=s0) == 8
    finish(engine, sid, 0, range(7))
    assert advance(engine, s0) is None  # trial idx 7 (in the quorum) still open
    finish(engine, sid, 0, [7])
    done = advance(engine, s0)
    assert done is not None and len(done.trial_ids) == 4 and not done.sweep_done
    assert rows(engine, "SELECT idx, status FROM stages WHERE sweep_id = :s ORDER BY idx",
                s=sid) == [(0, "advanced"), (1, "running")]
    # carried trials are the quorum's best (highest idx wins the fake scores), never stragglers
    parents = rows(engine, "SELECT p.idx FROM trials t JOIN trials p ON p.id = t.parent_id "
                           "WHERE t.stage_id = :st ORDER BY t.idx",
                   st=stage_id(engine, sid, 1))
    assert parents == [(7,), (6,)]
    assert advance(engine, s0) is None  # nothing more due until the stragglers end


def test_sweep_finishes_only_when_every_stage_closed(sweep) -> None:  # type: ignore[no-untyped-def]
    engine, sid = sweep
    s0 = stage_id(engine, sid, 0)
    finish(engine, sid, 0, range(8))
    advance(engine, s0)
    s1 = stage_id(engine, sid, 1)
    finish(engine, sid, 1, range(4))
    done = advance(engine, s1)
    assert done is not None and not done.sweep_done  # stage 0's stragglers are still open
    assert scalar(engine, "SELECT status FROM sweeps WHERE id = :s", s=sid) == "running"
    finish(engine, sid, 0, [8, 9], status="diverged")
    done = advance(engine, s0)
    assert done is not None and done.sweep_done
    assert rows(engine, "SELECT status FROM stages WHERE sweep_id = :s ORDER BY idx",
                s=sid) == [("done",), ("done",)]
    assert scalar(engine, "SELECT status FROM sweeps WHERE id = :s", s=sid) == "done"


def test_planning_is_deterministic_whatever_the_finishing_order(tmp_path: Path,
                                                                db_url: str) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=[
        {"trials": 10, "epochs": 1, "quorum": 0.8}, {"trials": 4, "epochs": 2}]))
    engine = make_engine(db_url)
    plans = []
    for order in ([*range(10)], [9, 8, *range(8)]):
        made = create_sweep(engine, cfg, "q", prepare_dataset(cfg))
        for i in order:
            finish(engine, made.sweep_id, 0, [i])
            advance(engine, stage_id(engine, made.sweep_id, 0))
        plans.append(rows(engine, """
            SELECT t.idx, p.name, p.value FROM trials t JOIN params p ON p.trial_id = t.id
            JOIN stages st ON st.id = t.stage_id
            WHERE st.sweep_id = :s AND st.idx = 1 ORDER BY t.idx, p.name""", s=made.sweep_id))
    assert plans[0] == plans[1] and plans[0]
