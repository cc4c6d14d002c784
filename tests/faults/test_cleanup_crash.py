"""A crash during checkpoint cleanup loses nothing (issue 17): `hpsweep gc` is SIGKILLed
again and again inside one of its per-trial transactions until a run finishes by itself.
After every kill each checkpoint still needed is there — the 'last' checkpoints `extend`
resumes from byte for byte, the 'best' weights and snapshots the ensembles read (the
same weights) — every blob decodes, and the finished cleanup leaves a sweep that
`ensemble top-k` and `extend` (resuming the carried trials) still serve."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, text

from coordinator import jobs
from coordinator.retention import NOTHING, RESUMABLE, WEIGHTS, retention_plan
from storage.db import make_engine, transact
from tests.coordinator_tests.finished_sweep import drain
from tests.coordinator_tests.test_retention import build_in_process, ranked
from tests.support.db import assert_curves_complete, rows, wait_for
from tests.support.processes import ROOT, _state, _write_locked
from tests.support.processes import hpsweep_cmd as hpsweep
from tests.support.processes import worker_env as env_for
from worker.nn import checkpoint

pytestmark = [pytest.mark.fault, pytest.mark.integration, pytest.mark.slow]

Stored = dict[int, dict[str, list[bytes]]]


def stored(engine: Engine) -> Stored:
    """trial id -> kind -> blobs (in epoch order)."""
    out: Stored = {}
    for tid, kind, data in rows(engine, "SELECT trial_id, kind, data FROM checkpoints "
                                        "ORDER BY trial_id, kind, epoch"):
        out.setdefault(tid, {}).setdefault(kind, []).append(bytes(data))
    return out


def weights(blob: bytes) -> dict[str, np.ndarray]:
    """What an ensemble reads of a checkpoint: everything but the resume-only state."""
    return {k: a for k, a in checkpoint.decode(blob).items()
            if not k.startswith(("optim.", "rng"))}


def same_weights(a: list[bytes], b: list[bytes]) -> bool:
    pairs = [(weights(x), weights(y)) for x, y in zip(a, b, strict=True)]
    return all(wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
               for wa, wb in pairs)


def assert_nothing_needed_lost(engine: Engine, plan: dict[int, str], before: Stored) -> None:
    now = stored(engine)
    for blobs in now.values():
        for kind_blobs in blobs.values():
            for blob in kind_blobs:
                checkpoint.decode(blob)  # raises on a torn or corrupt blob
    for tid, keep in plan.items():
        if keep == RESUMABLE:  # extend resumes it: bit for bit
            assert now[tid]["last"] == before[tid]["last"], f"trial {tid} lost its 'last'"
        if keep in (RESUMABLE, WEIGHTS):  # ensembles read these weights
            for kind in ("best", "snapshot"):
                if kind in before[tid]:
                    assert len(now[tid].get(kind, [])) == len(before[tid][kind]), (tid, kind)
                    assert same_weights(now[tid][kind], before[tid][kind]), (tid, kind)


def in_transaction(engine: Engine, db_url: str) -> bool:
    """Whether the (stopped) gc process is inside a transaction right now."""
    if db_url.startswith("sqlite"):
        return _write_locked(db_url.removeprefix("sqlite:///"))  # BEGIN IMMEDIATE each
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL")).scalar())


def checkpoint_bytes(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COALESCE(SUM(LENGTH(data)), 0) "
                                     "FROM checkpoints")).scalar())


def run_gc_killed_mid_transaction(engine: Engine, db_url: str, env: dict[str, str],
                                  name: str) -> bool:
    """One `hpsweep gc` run, SIGKILLed (True) inside a transaction once it has committed
    at least one trial's cleanup; False if it finished first."""
    start = checkpoint_bytes(engine)
    proc = subprocess.Popen(hpsweep("gc", name, "--db", db_url), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # full speed until a trial's cleanup has committed, then catch it inside the next
        wait_for(lambda: proc.poll() is not None or checkpoint_bytes(engine) < start, 300,
                 interval=0.002)
        while proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGSTOP)
            except ProcessLookupError:
                break
            if not wait_for(lambda: _state(proc.pid) in ("T", "Z", "?"), 5):
                raise AssertionError("gc did not stop")
            if in_transaction(engine, db_url):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return True
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    return False


def test_gc_killed_mid_cleanup_loses_nothing_and_a_rerun_finishes(
        tmp_path, db_url, redis_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # a database written before retention: every trial keeps all its checkpoints
    monkeypatch.setattr(jobs, "apply_retention_of_stage", lambda engine, stage_id: None)
    name = build_in_process(db_url, redis_url, tmp_path)
    engine = make_engine(db_url)
    sweep_id = rows(engine, "SELECT id FROM sweeps WHERE name = :n", n=name)[0][0]
    plan = transact(engine, lambda s: retention_plan(s, sweep_id))
    assert {RESUMABLE, WEIGHTS, NOTHING} <= set(plan.values())
    before = stored(engine)
    env: dict[str, Any] = env_for(db_url, redis_url, tmp_path / "cache")
    look = make_engine(db_url, readonly=True)  # reads while gc, stopped, holds the lock

    kills = 0
    while run_gc_killed_mid_transaction(look, db_url, env, name):
        kills += 1
        assert kills <= 40, "gc made no progress between kills"
        assert_nothing_needed_lost(look, plan, before)
    assert kills >= 1  # every run but the last died inside a transaction
    assert_nothing_needed_lost(look, plan, before)
    look.dispose()

    # the cleanup is complete: as the policy says, and a further gc finds nothing to do
    final = stored(engine)
    for tid, keep in plan.items():
        kinds = set(final.get(tid, {}))
        if keep == NOTHING:
            assert not kinds, (tid, kinds)
        elif keep == WEIGHTS:
            assert "last" not in kinds and "best" in kinds, (tid, kinds)
        else:
            assert "last" in kinds, (tid, kinds)
        for blob in (b for k in ("best", "snapshot") for b in final.get(tid, {}).get(k, [])):
            assert not any(k.startswith("optim.") for k in checkpoint.decode(blob))
    out = subprocess.run(hpsweep("gc", name, "--db", db_url), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "0 trial(s) cleaned" in out.stdout, out.stdout + out.stderr

    # what the kept checkpoints are for still works
    res = subprocess.run(hpsweep("ensemble", name, "--method", "top-k", "--k", "3", "--db",
                                 db_url), cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    last = ranked(engine, 1)
    res = subprocess.run(hpsweep("extend", name, "--trials", "2", "--epochs", "8", "--db",
                                 db_url, "--redis", redis_url), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    drain(db_url, redis_url, tmp_path)
    assert_curves_complete(engine)
    carried = {r[0] for r in rows(engine, "SELECT t.parent_id FROM trials t JOIN stages st "
                                          "ON st.id = t.stage_id WHERE st.idx = 2")}
    assert carried == set(last[:2])
    engine.dispose()
