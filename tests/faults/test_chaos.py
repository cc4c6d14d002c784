"""Acceptance 1: a sweep finishes exactly while a chaos loop SIGKILLs a random worker every
1-2 s and starts a new one; its curves equal a chaos-free run's, row for row."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.support.configs import write_config
from tests.support.db import rows, sweep_status, wait_for
from tests.support.processes import Fleet
from tests.support.reference import assert_curves_match, reference_curves
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.fault, pytest.mark.integration, pytest.mark.slow]

WORKERS, MAX_KILLS, CHAOS_SECONDS = 3, 25, 45.0


def test_sweep_survives_a_worker_killed_every_second_or_two(
        tmp_path: Path, dataset: Path, db: str, redis_server: RedisServer, fleet: Fleet) -> None:
    # Two stages: 16 trials of 5 epochs, then the 4 best ranges refined, 4 trials of 5 epochs.
    # The learning-rate range reaches rates that diverge, so 'diverged' is exercised too.
    # More attempts than kills: bad luck alone (one trial's worker killed three times, the
    # default cap) must not fail a trial here; the cap has its own test in test_attempts.py.
    cfg = write_config(tmp_path / "c.yaml", "blobs", dataset=dataset,
                       stages=[(16, 5), (4, 5)], hidden=1024,
                       space={"learning_rate": {"dist": "log_uniform", "low": 1e-3,
                                                "high": 1.0}},
                       max_attempts=MAX_KILLS + 1)
    reference = reference_curves(cfg, tmp_path / "ref")
    sweep_id = fleet.launch(cfg)
    engine = fleet.engine
    for _ in range(WORKERS):
        fleet.start()

    rng = random.Random(0)
    kills, deadline = 0, time.monotonic() + CHAOS_SECONDS
    while (sweep_status(engine, sweep_id) == "running" and kills < MAX_KILLS
           and time.monotonic() < deadline):
        time.sleep(rng.uniform(1.0, 2.0))
        rng.choice(fleet.live()).kill()
        kills += 1
        fleet.start()
    # Chaos over: the survivors (and their reconcilers) must finish the sweep on their own.
    assert wait_for(lambda: sweep_status(engine, sweep_id) != "running", 90), fleet.logs()

    assert sweep_status(engine, sweep_id) == "done"
    assert kills >= 3, f"only {kills} kills: the sweep ended too soon"
    statuses = rows(engine, "SELECT status, COUNT(*) FROM trials WHERE sweep_id = :s "
                            "GROUP BY status", s=sweep_id)
    assert {s for s, _ in statuses} <= {"done", "diverged"}, statuses
    assert sum(n for _, n in statuses) == 20
    assert rows(engine, "SELECT trial_id, epoch, COUNT(*) FROM curves GROUP BY trial_id, epoch "
                        "HAVING COUNT(*) > 1") == []
    retried = rows(engine, "SELECT COUNT(*) FROM trials WHERE attempts > 1")[0][0]
    assert retried >= 2, "hardly any trial was interrupted: the chaos did nothing"
    assert "resuming after epoch" in fleet.logs(tail=10**6), "no resume from a checkpoint"
    assert_curves_match(engine, sweep_id, reference)
