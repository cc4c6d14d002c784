"""Enqueue order: the last stage's longest trials first (coordinator.enqueue_order, stages)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from coordinator.config import load_config
from coordinator.enqueue_order import STEP_COST, longest_first, trial_cost
from coordinator.launch import create_sweep, prepare_dataset
from coordinator.stages import advance
from storage.db import make_engine, transact
from storage.sweeps import trial_ids_by_idx
from storage.trials import trial_params
from tests.support.configs import write_config
from tests.support.db import rows

BASE = {"learning_rate": 0.1, "update_rule": "sgd", "depth": 1, "batch_size": 64}


def test_cost_counts_epochs_left_and_multiply_adds() -> None:
    narrow = trial_cost({**BASE, "hidden_size": 10}, 4, 64, 10)
    assert narrow == 4 * (64 * 10 + 10 * 10 + STEP_COST / 64)
    assert trial_cost({**BASE, "hidden_size": 500}, 4, 64, 10) > narrow
    assert trial_cost({**BASE, "hidden_size": 10}, 8, 64, 10) == 2 * narrow
    assert trial_cost({**BASE, "hidden_size": 10}, 0, 64, 10) == 0
    # two layers of 10 cost more than one; bigger minibatches fewer steps
    assert trial_cost({**BASE, "hidden_size": 10, "depth": 2}, 4, 64, 10) > narrow
    assert trial_cost({**BASE, "hidden_size": 10, "batch_size": 256}, 4, 64, 10) < narrow


def test_longest_first_is_stable() -> None:
    assert longest_first([7, 8, 9, 10], [1.0, 3.0, 1.0, 2.0]) == [8, 10, 7, 9]
    assert longest_first([], []) == []


@pytest.mark.integration
def test_the_last_stage_is_enqueued_longest_first(tmp_path: Path, sqlite_url: str) -> None:
    cfg = load_config(write_config(
        tmp_path / "c.yaml",
        space={"learning_rate": {"dist": "log_uniform", "low": 1e-3, "high": 1.0},
               "hidden_size": {"dist": "int_log_uniform", "low": 4, "high": 512}},
        train={"depth": 1, "batch_size": 64, "update_rule": "sgd"},
        stages=[{"trials": 6, "epochs": 1, "quorum": 1.0, "carry": 1, "keep": 1.0,
                 "margin": 1.0}, {"trials": 5, "epochs": 3}]))
    engine = make_engine(sqlite_url)
    made = create_sweep(engine, cfg, "q", prepare_dataset(cfg))
    stage0_ids = transact(engine, lambda s: trial_ids_by_idx(s, made.stage_id))
    assert stage0_ids == sorted(stage0_ids)  # stage 0 keeps index order
    with engine.begin() as conn:
        conn.execute(text("UPDATE trials SET status = 'done', best_val_acc = 0.5 + idx * 0.01, "
                          "best_val_loss = 1.0, best_epoch = 1 WHERE sweep_id = :s"),
                     {"s": made.sweep_id})
    stage0 = rows(engine, "SELECT id FROM stages WHERE sweep_id = :s", s=made.sweep_id)[0][0]
    done = advance(engine, stage0)
    assert done is not None and len(done.trial_ids) == 5
    params = transact(engine, lambda s: trial_params(s, list(done.trial_ids)))
    carried = {t for (t,) in rows(engine, "SELECT id FROM trials WHERE parent_id IS NOT NULL")}
    costs = [trial_cost(params[t], 3 - (1 if t in carried else 0), 2, 3)
             for t in done.trial_ids]
    assert costs == sorted(costs, reverse=True)
    assert sorted(done.trial_ids) != list(done.trial_ids)  # the order really changed
    engine.dispose()
