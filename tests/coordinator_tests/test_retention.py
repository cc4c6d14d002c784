"""Checkpoint retention: finished trials keep weights only (the top of each stage), the
best of the last stage keep everything for `extend`, cleanup is per trial (a crash
mid-way loses nothing), and `hpsweep gc` applies it to databases written before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from coordinator import jobs, retention
from storage import retention as store
from storage.db import make_engine
from tests.coordinator_tests.finished_sweep import TINY, build, cli, drain
from tests.support.configs import write_config
from tests.support.db import assert_curves_complete, rows, scalar
from worker.nn import checkpoint

pytestmark = pytest.mark.integration

POLICY: dict[str, Any] = {"checkpoints": {"keep": "top", "top": 3}}


def build_in_process(db_url: str, redis_url: str, tmp_path: Path) -> str:
    """The tiny sweep drained by a worker in this process (so a test can patch it)."""
    cfg = write_config(tmp_path / "tiny.yaml", **{**TINY, **POLICY})
    res = cli("launch", str(cfg), "--db", db_url, "--redis", redis_url)
    assert res.exit_code == 0, res.output
    res = cli("worker", "--burst", "--db", db_url, "--redis", redis_url)
    assert res.exit_code == 0, res.output
    return scalar(make_engine(db_url), "SELECT name FROM sweeps")


def stored(engine: Engine) -> dict[int, dict[str, list[bytes]]]:
    """trial id -> kind -> blobs."""
    out: dict[int, dict[str, list[bytes]]] = {}
    for tid, kind, data in rows(engine, "SELECT trial_id, kind, data FROM checkpoints"):
        out.setdefault(tid, {}).setdefault(kind, []).append(bytes(data))
    return out


def ranked(engine: Engine, stage_idx: int) -> list[int]:
    """Done trials of a search stage, best first (as the stage ranks them)."""
    return [r[0] for r in rows(engine, """
        SELECT t.id FROM trials t JOIN stages st ON st.id = t.stage_id
        WHERE st.idx = :i AND t.status = 'done'
        ORDER BY t.best_val_acc DESC, t.best_val_loss, t.id""", i=stage_idx)]


def has_optimizer(blob: bytes) -> bool:
    return any(k.startswith("optim.") for k in checkpoint.decode(blob))


def test_default_policy_keeps_top_weights_and_extend_candidates(tmp_path: Path, db_url: str,
                                                                redis_url: str) -> None:
    name = build(db_url, redis_url, tmp_path, **POLICY)
    engine = make_engine(db_url)
    ck = stored(engine)
    first, last = ranked(engine, 0), ranked(engine, 1)
    assert len(first) >= 4 and len(last) >= 3  # tiny sweep: a trial may diverge
    for tid in first[:3]:  # the top of stage 0: best weights (and snapshots), no optimizer
        assert "last" not in ck[tid] and len(ck[tid]["best"]) == 1
        assert not any(has_optimizer(b) for kind in ck[tid] for b in ck[tid][kind])
    everyone = {r[0] for r in rows(engine, "SELECT id FROM trials")}
    assert set(ck) == set(first[:3]) | set(last[:3])  # the rest (diverged too) keep nothing
    assert len(everyone) > len(ck)
    for tid in last[:2]:  # `extend` may carry these two: 'last' resumes them
        assert has_optimizer(ck[tid]["last"][0]) and not has_optimizer(ck[tid]["best"][0])
    assert "last" not in ck[last[2]] and not has_optimizer(ck[last[2]]["best"][0])
    for method in ("top-k", "average", "snapshots"):
        res = cli("ensemble", name, "--method", method, "--k", "3", "--db", db_url)
        assert res.exit_code == 0, res.output
    # extend carries the protected trials on, resumed from their checkpoints
    res = cli("extend", name, "--trials", "2", "--epochs", "8", "--db", db_url,
              "--redis", redis_url)
    assert res.exit_code == 0, res.output
    drain(db_url, redis_url, tmp_path)
    assert_curves_complete(engine)
    parents = {r[0] for r in rows(engine, "SELECT parent_id FROM trials t JOIN stages st ON "
                                          "st.id = t.stage_id WHERE st.idx = 2")}
    assert parents == set(last[:2])
    ck = stored(engine)
    assert all("last" not in ck[tid] for tid in last[:2])  # no longer extend's candidates


def test_cleanup_is_per_trial_and_a_crash_loses_nothing(tmp_path: Path, sqlite_url: str,
                                                        redis_url: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # run the sweep with cleanup off: the database of a version before retention
    monkeypatch.setattr(jobs, "apply_retention_of_stage", lambda engine, stage_id: None)
    name = build_in_process(sqlite_url, redis_url, tmp_path)
    engine = make_engine(sqlite_url)
    sweep_id = scalar(engine, "SELECT id FROM sweeps WHERE name = :n", n=name)
    before = stored(engine)
    assert all("last" in kinds for kinds in before.values())  # nothing cleaned yet
    calls: list[int] = []
    real = store.rewrite_checkpoint

    def dies_on_second(s, trial_id, *rest) -> None:  # type: ignore[no-untyped-def]
        calls.append(trial_id)
        if len(set(calls)) == 2:  # the process dies inside the second trial it rewrites
            raise KeyboardInterrupt("killed mid-cleanup")
        real(s, trial_id, *rest)

    monkeypatch.setattr(store, "rewrite_checkpoint", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        retention.apply_retention(engine, sweep_id)
    mid = stored(engine)
    assert mid[calls[-1]] == before[calls[-1]]  # the trial in flight: untouched
    monkeypatch.setattr(store, "rewrite_checkpoint", real)
    freed = retention.apply_retention(engine, sweep_id)
    assert freed.bytes > 0
    final = stored(engine)
    # every trial is either as it was or as the finished cleanup leaves it
    assert all(mid.get(t) in (before[t], final.get(t)) for t in before)
    assert any(mid.get(t) != before[t] for t in before)  # the crash came part-way through
    again = retention.apply_retention(engine, sweep_id)
    assert again.bytes == 0  # idempotent
    for method in ("top-k", "average", "snapshots"):
        res = cli("ensemble", name, "--method", method, "--k", "3", "--db", sqlite_url)
        assert res.exit_code == 0, res.output


def test_gc_shrinks_a_database_written_before_retention(tmp_path: Path, db_url: str, redis_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "apply_retention_of_stage", lambda engine, stage_id: None)
    name = build_in_process(db_url, redis_url, tmp_path)
    engine = make_engine(db_url)
    before = scalar(engine, "SELECT SUM(LENGTH(data)) FROM checkpoints")
    size_before = retention.database_size(engine)
    shown = cli("status", name, "--db", db_url).output
    assert f"checkpoints {before / 1e6:.1f} MB" in shown and "stored: " in shown
    res = cli("gc", "--vacuum", "--db", db_url)
    assert res.exit_code == 0, res.output
    after = scalar(engine, "SELECT SUM(LENGTH(data)) FROM checkpoints")
    assert after < before / 2
    assert f"{(before - after) / 1e6:.1f} MB of checkpoints freed" in res.output
    if engine.dialect.name == "sqlite":
        assert retention.database_size(engine) < size_before
    for args in (("status", name), ("best", name)):
        res = cli(*args, "--db", db_url)
        assert res.exit_code == 0, res.output
    assert f"checkpoints {after / 1e6:.1f} MB" in cli("status", name, "--db", db_url).output
    res = cli("ensemble", name, "--method", "top-k", "--k", "3", "--db", db_url)
    assert res.exit_code == 0, res.output
    assert len(json.loads(rows(engine, "SELECT members FROM ensembles")[0][0])) == 3
    assert "0 trial(s) cleaned" in cli("gc", name, "--db", db_url).output


def test_a_stage_closed_by_a_straggler_is_cleaned_without_gc(tmp_path: Path, sqlite_url: str,
                                                              redis_url: str) -> None:
    """Stage 0 advances on its quorum while one trial is still out; the whole last stage
    runs; when the straggler finally finishes, its finish closes stage 0 (and ends the
    sweep) and the advancement job of that closed stage cleans its checkpoints."""
    stages = [{"trials": 8, "epochs": 2, "quorum": 0.5}, {"trials": 4, "epochs": 2}]
    cfg = write_config(tmp_path / "tiny.yaml", **{**TINY, **POLICY, "stages": stages})
    assert cli("launch", str(cfg), "--db", sqlite_url, "--redis", redis_url).exit_code == 0
    engine = make_engine(sqlite_url)
    straggler = scalar(engine, "SELECT id FROM trials WHERE idx = 7")
    hold = "UPDATE trials SET status = 'running', attempts = 1, lease_token = 'held', " \
           "lease_expires = :t WHERE id = :i"
    with engine.begin() as conn:  # another worker holds it (a long lease)
        conn.execute(text(hold), {"t": 4102444800.0, "i": straggler})
    drain(sqlite_url, redis_url, tmp_path)
    assert scalar(engine, "SELECT status FROM sweeps") == "running"
    stage0 = "SELECT COUNT(*) FROM checkpoints c JOIN trials t ON t.id = c.trial_id " \
             "JOIN stages st ON st.id = t.stage_id WHERE st.idx = 0 AND c.kind = 'last'"
    assert scalar(engine, stage0) == 7  # stage 0 is open: nothing of it cleaned yet
    with engine.begin() as conn:  # its lease runs out: the next worker takes it back
        conn.execute(text(hold), {"t": 0.0, "i": straggler})
    drain(sqlite_url, redis_url, tmp_path)
    assert scalar(engine, "SELECT status FROM sweeps") == "done"
    assert scalar(engine, stage0) == 0  # cleaned by the workers: no `hpsweep gc`
    kept = {r[0] for r in rows(engine, "SELECT DISTINCT c.trial_id FROM checkpoints c JOIN "
                                       "trials t ON t.id = c.trial_id JOIN stages st ON "
                                       "st.id = t.stage_id WHERE st.idx = 0")}
    assert kept == set(ranked(engine, 0)[:3])
    assert "0 trial(s) cleaned" in cli("gc", "--db", sqlite_url).output


def test_gc_of_an_unknown_sweep_is_bad_input(sqlite_url: str) -> None:
    make_engine(sqlite_url)
    res = cli("gc", "nope", "--db", sqlite_url)
    assert res.exit_code == 2 and "nope" in res.output
