"""A stage that prunes gives the same pruned trials whatever order its trials run in and
however many workers run them: real trials (digits), real database, the product's own
``run_attempt``; trials handed back to wait for earlier ones are run again later."""

from __future__ import annotations

import random
import threading
from collections import deque
from typing import Any

import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from coordinator.cli import main
from coordinator.config import load_config
from coordinator.launch import create_sweep, prepare_dataset
from coordinator.stages import advance
from storage.db import make_engine, transact
from storage.sweeps import trial_ids_by_idx
from tests.support.configs import write_config
from tests.support.db import rows
from worker.dataset_cache import DatasetCache
from worker.trainer import TrialContext, run_attempt

pytestmark = pytest.mark.integration

SPACE = {"learning_rate": {"dist": "log_uniform", "low": 1e-4, "high": 1.0},
         "reg": {"dist": "log_uniform", "low": 1e-6, "high": 1e-2}}
PRUNE = {"rule": "median", "after": 1, "min_trials": 3}


def make_stage(tmp_path, db_url: str, trials: int = 10, epochs: int = 4):  # type: ignore[no-untyped-def]
    cfg = load_config(write_config(
        tmp_path / "c.yaml", dataset="digits", space=SPACE,
        train={"depth": 1, "hidden_size": 32, "batch_size": 64, "update_rule": "sgd"},
        stages=[{"trials": trials, "epochs": epochs, "prune": PRUNE}]))
    engine = make_engine(db_url)
    made = create_sweep(engine, cfg, "q", prepare_dataset(cfg))
    return engine, made.stage_id


def run_in_order(engine, order: list[int], workers: int) -> int:  # type: ignore[no-untyped-def]
    """Run trials as ``workers`` threads would take them off a queue in ``order``; a trial
    handed back (waiting for earlier ones) goes to the back. Returns the hand-backs."""
    ctx = TrialContext(engine=engine, worker="w", lease_seconds=120.0, datasets=DatasetCache())
    queue, lock, released = deque(order), threading.Lock(), [0]
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                if not queue:
                    return
                tid = queue.popleft()
            try:
                status = run_attempt(ctx, tid).status
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
                return
            if status == "released":
                with lock:
                    queue.append(tid)
                    released[0] += 1

    with threadpool_limits(1):
        threads = [threading.Thread(target=work) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return released[0]


def outcome(engine, stage_id: int) -> list[tuple[Any, ...]]:  # type: ignore[no-untyped-def]
    """Per trial by index: status, epochs recorded, best accuracy, the reason it stopped."""
    return rows(engine, "SELECT t.idx, t.status, COUNT(c.epoch), t.best_val_acc, t.error "
                        "FROM trials t LEFT JOIN curves c ON c.trial_id = t.id "
                        "WHERE t.stage_id = :s GROUP BY t.idx, t.status, t.best_val_acc, "
                        "t.error ORDER BY t.idx", s=stage_id)


def test_the_pruned_set_does_not_depend_on_the_order(tmp_path, db_url) -> None:  # type: ignore[no-untyped-def]
    results, handed_back = [], []
    for how, workers in [("index", 1), ("reversed", 1), ("shuffled", 3)]:
        engine, stage_id = make_stage(tmp_path, db_url)  # a sweep of its own each time
        ids = transact(engine, lambda s, sid=stage_id: trial_ids_by_idx(s, sid))
        order = {"index": ids, "reversed": ids[::-1],
                 "shuffled": random.Random(7).sample(ids, len(ids))}[how]
        handed_back.append(run_in_order(engine, order, workers))
        results.append(outcome(engine, stage_id))
        assert advance(engine, stage_id) is not None  # every trial final: the stage advances
        engine.dispose()
    assert results[0] == results[1] == results[2]
    statuses = [r[1] for r in results[0]]
    pruned = [r for r in results[0] if r[1] == "pruned"]
    assert pruned and "done" in statuses and set(statuses) <= {"done", "pruned", "diverged"}
    assert all(r[1] == "done" for r in results[0][:PRUNE["min_trials"]])
    for _, _, epochs, acc, why in pruned:  # curve kept up to the epoch it stopped after
        assert 1 <= epochs < 4 and acc is not None and f"after epoch {epochs}:" in why
    assert handed_back[0] == 0 and handed_back[1] > 0  # in index order nobody waits
    # waiting is not a failure: no hand-back used up an attempt
    assert rows(engine, "SELECT DISTINCT attempts FROM trials") == [(1,)]
    status = CliRunner().invoke(main, ["status", "--db", db_url], catch_exceptions=False)
    assert status.exit_code == 0 and f"{len(pruned)} pruned" in status.output, status.output

