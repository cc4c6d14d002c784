"""A plug-in model (the example ``convnet``) under faults: a worker SIGKILLed mid-trial
resumes bit-exactly, and a worker that cannot train the model hands its trials back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.support.configs import write_config
from tests.support.db import epochs_recorded, rows, sweep_status, wait_for
from tests.support.processes import Fleet
from tests.support.reference import assert_curves_match, reference_curves

pytestmark = [pytest.mark.fault, pytest.mark.integration]

EPOCHS = 8
# the blobs' 128 features read as 2x8x8 images
CONVNET = {"model": "convnet",
           "train": {"channels": 2, "num_filters": 8, "batch_size": 64, "update_rule": "adam",
                     "reg": 1e-4, "ema_decay": 0.9}}


def _sweep(tmp_path: Path, dataset: Path, fleet: Fleet,
           trials: int = 1) -> tuple[Path, Engine, int]:
    cfg = write_config(tmp_path / "c.yaml", "blobs", dataset=dataset,
                       stages=[(trials, EPOCHS)], **CONVNET)
    sweep_id = fleet.launch(cfg)
    return cfg, fleet.engine, sweep_id


def test_sigkill_mid_trial_resumes_the_convnet_bit_exactly(
        tmp_path, dataset, db, redis_server, fleet: Fleet) -> None:  # type: ignore[no-untyped-def]
    cfg, engine, sweep_id = _sweep(tmp_path, dataset, fleet)
    first = fleet.start()
    assert wait_for(lambda: epochs_recorded(engine, sweep_id) >= 2, 120), fleet.logs()
    time.sleep(0.05)  # into the next epoch
    first.kill()
    killed_at = epochs_recorded(engine, sweep_id)
    assert killed_at < EPOCHS
    second = fleet.start()
    assert wait_for(lambda: sweep_status(engine, sweep_id) != "running", 180), fleet.logs()
    assert rows(engine, "SELECT status, attempts FROM trials") == [("done", 2)]
    assert f"resuming after epoch {killed_at}" in second.text(), second.text()
    # every column of every epoch equal to an undisturbed run's (EMA metrics included)
    assert_curves_match(engine, sweep_id, reference_curves(cfg, tmp_path / "ref"))


def test_a_worker_without_the_model_hands_its_trials_to_one_that_has_it(
        tmp_path, dataset, db, redis_server, fleet: Fleet) -> None:  # type: ignore[no-untyped-def]
    _, engine, sweep_id = _sweep(tmp_path, dataset, fleet, trials=2)
    lacking = fleet.start("--models", "mlp")
    assert wait_for(lambda: "cannot train model 'convnet'" in lacking.text(), 60), fleet.logs()
    # it keeps serving (looking again now and then) and never claims a convnet trial
    assert lacking.alive(), lacking.text()
    assert rows(engine, "SELECT status, attempts FROM trials ORDER BY id") == [
        ("queued", 0), ("queued", 0)]
    assert lacking.text().count("cannot train model") == 1  # one line, naming model and host
    able = fleet.start()
    assert wait_for(lambda: sweep_status(engine, sweep_id) != "running", 180), fleet.logs()
    assert rows(engine, "SELECT status, attempts FROM trials ORDER BY id") == [
        ("done", 1), ("done", 1)]
    assert lacking.alive() and ": start" not in lacking.text()  # it started no trial
    assert "trial 1: done" in able.text()
