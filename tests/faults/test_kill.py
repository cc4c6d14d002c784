"""A worker killed (SIGKILL) or frozen (SIGSTOP) mid-epoch: the trial resumes elsewhere from
its last checkpoint, and the lost execution writes nothing after the takeover."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from storage.db import make_engine
from tests.support.configs import write_config
from tests.support.db import epochs_recorded, rows, scalar, sweep_status, wait_for
from tests.support.processes import Fleet, freeze_outside_transaction
from tests.support.reference import assert_curves_match, reference_curves
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.fault, pytest.mark.integration]

EPOCHS = 10
BOTH_BACKENDS = pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)


def _one_trial_sweep(tmp_path: Path, dataset: Path, fleet: Fleet,
                     **top: object) -> tuple[Path, Engine, int]:
    cfg = write_config(tmp_path / "c.yaml", "blobs", dataset=dataset, stages=[(1, EPOCHS)], **top)
    sweep_id = fleet.launch(cfg)  # the database exists from here on
    return cfg, fleet.engine, sweep_id


@BOTH_BACKENDS
def test_sigkill_of_a_whole_worker_mid_epoch_resumes_from_the_last_checkpoint(
        tmp_path: Path, dataset: Path, db: str, redis_server: RedisServer, fleet: Fleet) -> None:
    cfg, engine, sweep_id = _one_trial_sweep(tmp_path, dataset, fleet)
    first = fleet.start()
    assert wait_for(lambda: epochs_recorded(engine, sweep_id) >= 3, 60), fleet.logs()
    time.sleep(0.05)  # into the next epoch
    first.kill()
    killed_at = epochs_recorded(engine, sweep_id)
    assert killed_at < EPOCHS
    assert scalar(engine, "SELECT status FROM trials") == "running"
    second = fleet.start()
    assert wait_for(lambda: sweep_status(engine, sweep_id) != "running", 60), fleet.logs()
    assert sweep_status(engine, sweep_id) == "done"
    assert rows(engine, "SELECT status, attempts FROM trials") == [("done", 2)]
    assert f"resuming after epoch {killed_at}" in second.text(), second.text()
    assert_curves_match(engine, sweep_id, reference_curves(cfg, tmp_path / "ref"))


def test_sigstop_past_the_lease_then_sigcont_the_stale_execution_writes_nothing(
        tmp_path: Path, dataset: Path, db: str, redis_server: RedisServer, fleet: Fleet) -> None:
    cfg, engine, sweep_id = _one_trial_sweep(tmp_path, dataset, fleet)
    frozen = fleet.start()
    assert wait_for(lambda: epochs_recorded(engine, sweep_id) >= 3, 60), fleet.logs()
    time.sleep(0.05)
    freeze_outside_transaction(frozen, tmp_path / "sweep.db")
    stopped_at = time.monotonic()
    at_stop = epochs_recorded(engine, sweep_id)
    taker = fleet.start()
    assert wait_for(lambda: scalar(engine, "SELECT attempts FROM trials") == 2, 30), fleet.logs()
    assert wait_for(lambda: epochs_recorded(engine, sweep_id) >= at_stop + 2, 30), fleet.logs()
    before = rows(engine, "SELECT epoch, val_loss, seconds FROM curves WHERE epoch <= :e "
                          "ORDER BY epoch", e=at_stop + 1)
    frozen.signal(signal.SIGCONT)  # mid-way through the new attempt: its lease is live
    stop_seconds = time.monotonic() - stopped_at
    assert wait_for(lambda: "lease lost" in frozen.text(), 30), frozen.text()
    assert wait_for(lambda: sweep_status(engine, sweep_id) != "running", 60), fleet.logs()
    # The frozen epoch's row would carry the time spent stopped; no row does.
    after = rows(engine, "SELECT epoch, val_loss, seconds FROM curves WHERE epoch <= :e "
                         "ORDER BY epoch", e=at_stop + 1)
    assert after == before
    assert scalar(engine, "SELECT MAX(seconds) FROM curves") < stop_seconds / 2
    assert rows(engine, "SELECT status, attempts FROM trials") == [("done", 2)], (
        rows(engine, "SELECT error FROM trials"), fleet.logs())
    assert frozen.alive(), "the stale worker should carry on serving"
    assert "trial 1: done" in taker.text() and "trial 1: done" not in frozen.text()
    assert_curves_match(engine, sweep_id, reference_curves(cfg, tmp_path / "ref"))


def _flip(blob: bytes) -> bytes:
    data = bytearray(blob)
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


@BOTH_BACKENDS
def test_corrupted_latest_checkpoint_falls_back_with_a_warning(
        tmp_path: Path, dataset: Path, db: str, redis_server: RedisServer, fleet: Fleet) -> None:
    # A high learning rate: validation accuracy peaks early, so 'best' is older than 'last'.
    high_lr = {"learning_rate": {"dist": "log_uniform", "low": 2e-2, "high": 3e-2}}
    cfg, engine, sweep_id = _one_trial_sweep(tmp_path, dataset, fleet,
                                             space=high_lr)
    first = fleet.start()
    assert wait_for(lambda: epochs_recorded(engine, sweep_id) >= 5, 60), fleet.logs()
    first.kill()
    saved = rows(engine, "SELECT kind, epoch, data FROM checkpoints")
    newest = max(epoch for _, epoch, _ in saved)
    with make_engine(db).begin() as conn:  # every checkpoint of the newest epoch
        for kind, epoch, data in saved:
            if epoch == newest:
                conn.execute(text("UPDATE checkpoints SET data = :d WHERE kind = :k"),
                             {"d": _flip(data), "k": kind})
    fallback = max((epoch for _, epoch, _ in saved if epoch < newest), default=0)
    assert 0 < fallback < newest, [(kind, epoch) for kind, epoch, _ in saved]
    second = fleet.start()
    assert wait_for(lambda: sweep_status(engine, sweep_id) != "running", 60), fleet.logs()
    log = second.text()
    assert f"last checkpoint of epoch {newest} is corrupt" in log, log
    assert f"resuming after epoch {fallback}" in log, log
    assert rows(engine, "SELECT status, attempts FROM trials") == [("done", 2)]
    assert_curves_match(engine, sweep_id, reference_curves(cfg, tmp_path / "ref"))


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_sigkill_of_the_work_horse_only_resumes_from_the_last_checkpoint(
        tmp_path: Path, dataset: Path, db: str, redis_server: RedisServer, fleet: Fleet) -> None:
    cfg, engine, sweep_id = _one_trial_sweep(tmp_path, dataset, fleet)
    parent = fleet.start("--fork")
    assert wait_for(lambda: epochs_recorded(engine, sweep_id) >= 3, 60), fleet.logs()
    horses = _children(parent.pid)
    assert len(horses) == 1, horses
    os.kill(horses[0], signal.SIGKILL)
    killed_at = epochs_recorded(engine, sweep_id)
    assert wait_for(lambda: sweep_status(engine, sweep_id) != "running", 60), fleet.logs()
    assert sweep_status(engine, sweep_id) == "done"
    assert parent.alive(), parent.text()
    log = parent.text()
    assert "Work-horse terminated unexpectedly" in log, log
    assert f"resuming after epoch {killed_at}" in log, log
    assert rows(engine, "SELECT status, attempts FROM trials") == [("done", 2)]
    assert_curves_match(engine, sweep_id, reference_curves(cfg, tmp_path / "ref"))


def test_sigkill_of_the_parent_only_lets_the_orphan_horse_finish_once(
        tmp_path: Path, dataset: Path, db: str, redis_server: RedisServer, fleet: Fleet) -> None:
    cfg, engine, sweep_id = _one_trial_sweep(tmp_path, dataset, fleet)
    parent = fleet.start("--fork")
    assert wait_for(lambda: epochs_recorded(engine, sweep_id) >= 3, 60), fleet.logs()
    horse, = _children(parent.pid)
    os.kill(parent.pid, signal.SIGKILL)  # the horse has its own process group: it lives on
    parent.proc.wait()
    other = fleet.start()  # its reconciler must not take the trial from the live orphan
    try:
        assert wait_for(lambda: sweep_status(engine, sweep_id) != "running", 60), fleet.logs()
    finally:
        if wait_for(lambda: not Path(f"/proc/{horse}").exists(), 10) is False:
            os.kill(horse, signal.SIGKILL)
    assert sweep_status(engine, sweep_id) == "done"
    assert rows(engine, "SELECT status, attempts FROM trials") == [("done", 1)]
    assert "trial 1: start" not in other.text()
    assert_curves_match(engine, sweep_id, reference_curves(cfg, tmp_path / "ref"))
