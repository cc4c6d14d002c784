"""Whole sweeps through real worker processes, Redis and databases."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis
from sqlalchemy import Engine

from coordinator.cli import main
from coordinator.config import load_config
from coordinator.launch import create_sweep, prepare_dataset
from coordinator.stages import advance
from storage.db import make_engine
from tests.support.configs import write_config
from tests.support.db import assert_curves_complete, rows, scalar
from tests.support.processes import ROOT, Fleet
from tests.support.redis_lease import flush_besides_lease

pytestmark = pytest.mark.integration


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def drain(tmp_path: Path, db_url: str, redis_url: str, n: int = 2) -> str:
    """Run ``n`` burst workers to the end; returns their combined stderr."""
    return Fleet(tmp_path, db_url, redis_url).drain(n=n)


def trial_params(engine: Engine) -> list[tuple]:
    return rows(engine, """SELECT st.idx, t.idx, t.seed, t.status, p.name, p.value, p.value_text
                           FROM trials t JOIN stages st ON st.id = t.stage_id
                           JOIN params p ON p.trial_id = t.id
                           ORDER BY st.idx, t.idx, p.name""")


def test_launch_and_burst_workers_finish_every_stage(tmp_path: Path, db_url: str,
                                                     redis_url: str) -> None:
    cfg = write_config(tmp_path / "c.yaml", stages=[{"trials": 6, "epochs": 1},
                                                    {"trials": 4, "epochs": 2},
                                                    {"trials": 2, "epochs": 4}])
    res = invoke("launch", str(cfg), "--db", db_url, "--redis", redis_url)
    assert res.exit_code == 0, res.output
    logs = drain(tmp_path, db_url, redis_url, n=3)
    engine = make_engine(db_url)
    assert scalar(engine, "SELECT status FROM sweeps") == "done", logs
    assert rows(engine, "SELECT idx, n_trials, epochs FROM stages ORDER BY idx") == [
        (0, 6, 1), (1, 4, 2), (2, 2, 4)]
    per_stage = rows(engine, """SELECT st.idx, COUNT(*) FROM trials t
                                JOIN stages st ON st.id = t.stage_id GROUP BY st.idx
                                ORDER BY st.idx""")
    assert per_stage == [(0, 6), (1, 4), (2, 2)]
    assert scalar(engine, "SELECT COUNT(*) FROM trials WHERE status NOT IN "
                          "('done', 'diverged')") == 0
    assert_curves_complete(engine)


def test_run_matches_launch_plus_workers_and_leaves_no_process(tmp_path: Path,
                                                               redis_url: str) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    launched_db = f"sqlite:///{tmp_path}/launched.db"
    assert invoke("launch", str(cfg), "--db", launched_db, "--redis", redis_url).exit_code == 0
    drain(tmp_path, launched_db, redis_url)

    queue = f"q{uuid.uuid4().hex[:8]}"
    ran_db = f"sqlite:///{tmp_path}/ran.db"
    proc = subprocess.run([sys.executable, "-m", "coordinator.cli", "run", str(cfg), "--workers",
                           "2", "--db", ran_db, "--queue", queue], cwd=ROOT, capture_output=True,
                          timeout=180, env=_env_without_redis(tmp_path))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "val_acc" in proc.stdout.decode()
    assert subprocess.run(["pgrep", "-f", f"--queue {queue}"], capture_output=True).stdout == b""
    assert not _embedded_redis_left(tmp_path)

    a, b = make_engine(launched_db), make_engine(ran_db)
    assert trial_params(a) == trial_params(b)
    assert scalar(b, "SELECT status FROM sweeps") == "done"
    assert_curves_complete(b)


def _env_without_redis(tmp_dir) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The run's environment: no Redis URL (so it embeds one), its temp files in tmp_dir."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("HPSWEEP_REDIS", "HPSWEEP_DB")}
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(tmp_dir))
    return env


def _embedded_redis_left(tmp_dir) -> bool:  # type: ignore[no-untyped-def]
    """Is an embedded Redis whose socket lives under tmp_dir still running?"""
    out = subprocess.run(["pgrep", "-f", f"{tmp_dir}/hpsweep-redis-"], capture_output=True)
    return bool(out.stdout.strip())


def test_too_low_learning_rate_is_flagged_and_the_next_range_moves_up(tmp_path: Path,
                                                                      sqlite_url: str,
                                                                      redis_url: str) -> None:
    cfg = write_config(tmp_path / "c.yaml", dataset="digits",
                       space={"learning_rate": {"dist": "log_uniform", "low": 1e-9,
                                                "high": 1e-6}},
                       stages=[{"trials": 30, "epochs": 1}, {"trials": 4, "epochs": 1}])
    invoke("launch", str(cfg), "--db", sqlite_url, "--redis", redis_url)
    drain(tmp_path, sqlite_url, redis_url)
    engine = make_engine(sqlite_url)
    flags = rows(engine, "SELECT param, side FROM boundary_flags f JOIN stages s "
                         "ON s.id = f.stage_id WHERE s.idx = 0")
    assert ("learning_rate", "high") in flags
    high = scalar(engine, "SELECT r.high FROM stage_ranges r JOIN stages s ON s.id = r.stage_id "
                          "WHERE s.idx = 1 AND r.param = 'learning_rate'")
    assert high > 1e-6
    res = invoke("status", "--db", sqlite_url)
    assert "learning_rate" in res.output and "high edge" in res.output


def test_wide_learning_rate_range_narrows_stage_by_stage(tmp_path: Path, sqlite_url: str,
                                                         redis_url: str) -> None:
    import math

    cfg = write_config(tmp_path / "c.yaml", dataset="digits",
                       space={"learning_rate": {"dist": "log_uniform", "low": 1e-4, "high": 1.0},
                              "reg": {"dist": "log_uniform", "low": 1e-6, "high": 10.0}},
                       stages=[{"trials": 16, "epochs": 1}, {"trials": 6, "epochs": 2},
                               {"trials": 3, "epochs": 3}])
    invoke("launch", str(cfg), "--db", sqlite_url, "--redis", redis_url)
    drain(tmp_path, sqlite_url, redis_url)
    engine = make_engine(sqlite_url)
    spans = rows(engine, "SELECT s.idx, r.low, r.high FROM stage_ranges r JOIN stages s "
                         "ON s.id = r.stage_id WHERE r.param = 'learning_rate' ORDER BY s.idx")
    widths = [math.log10(hi) - math.log10(lo) for _, lo, hi in spans]
    assert len(widths) == 3 and widths[-1] < widths[0]


def _advance_in_child(db_url: str, stage_id: int, barrier, results) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    barrier.wait()
    done = advance(engine, stage_id)
    results.put(None if done is None else done.next_stage_id)


def test_concurrent_stage_advancement_happens_exactly_once(tmp_path: Path, db_url: str) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=[{"trials": 8, "epochs": 1},
                                                                {"trials": 4, "epochs": 2}]))
    engine = make_engine(db_url)
    dataset = prepare_dataset(cfg)
    ctx = mp.get_context("spawn")  # fork() in a threaded pytest can deadlock
    for _ in range(6):
        made = create_sweep(engine, cfg, "q", dataset)
        with engine.begin() as conn:
            from sqlalchemy import text

            conn.execute(text("UPDATE trials SET status = 'done', best_val_acc = 0.5 + id * 0.001,"
                              " best_val_loss = 1.0 WHERE sweep_id = :s"), {"s": made.sweep_id})
        stage0 = scalar(engine, "SELECT id FROM stages WHERE sweep_id = :s", s=made.sweep_id)
        barrier, results = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_advance_in_child, args=(db_url, stage0, barrier, results))
                 for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        outcomes = [results.get(timeout=5) for _ in procs]
        assert sum(o is not None for o in outcomes) == 1
        assert rows(engine, "SELECT idx FROM stages WHERE sweep_id = :s ORDER BY idx",
                    s=made.sweep_id) == [(0,), (1,)]
        assert scalar(engine, "SELECT COUNT(*) FROM trials t JOIN stages s ON s.id = t.stage_id "
                              "WHERE s.sweep_id = :s AND s.idx = 1", s=made.sweep_id) == 4


def test_lost_advancement_is_completed_by_resume_and_resume_is_idempotent(
        tmp_path: Path, sqlite_url: str, redis_url: str) -> None:
    cfg = write_config(tmp_path / "c.yaml", stages=[{"trials": 6, "epochs": 1, "quorum": 1},
                                                    {"trials": 3, "epochs": 3}])
    invoke("launch", str(cfg), "--db", sqlite_url, "--redis", redis_url)
    Fleet(tmp_path, sqlite_url, redis_url).drain("--max-jobs", "6", timeout=60)
    conn = Redis.from_url(redis_url)
    flush_besides_lease(conn)  # the advancement job (and anything else) is lost
    engine = make_engine(sqlite_url)
    assert scalar(engine, "SELECT COUNT(*) FROM stages") == 1
    res = invoke("resume", "t", "--db", sqlite_url, "--redis", redis_url)
    assert "re-advanced 1 stage" in res.output
    drain(tmp_path, sqlite_url, redis_url, n=1)
    assert scalar(engine, "SELECT status FROM sweeps") == "done"
    before = rows(engine, "SELECT id, status, attempts FROM trials ORDER BY id")
    res = invoke("resume", "t", "--db", sqlite_url, "--redis", redis_url)
    assert "re-enqueued 0 trial(s), re-advanced 0 stage(s)" in res.output
    assert rows(engine, "SELECT id, status, attempts FROM trials ORDER BY id") == before
    assert conn.llen("rq:queue:hpsweep") == 0


def test_readme_example_queries_answer_on_both_databases(tmp_path: Path, db_url: str,
                                                         redis_url: str) -> None:
    import re

    cfg = write_config(tmp_path / "c.yaml", name="digits-mlp")
    invoke("launch", str(cfg), "--db", db_url, "--redis", redis_url)
    drain(tmp_path, db_url, redis_url, n=1)
    engine = make_engine(db_url)
    trial = scalar(engine, "SELECT MAX(id) FROM trials WHERE status = 'done'")
    queries = re.findall(r"```sql\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(queries) >= 3
    answers = [rows(engine, q.replace("trial_id = 42", f"trial_id = {trial}"))
               for q in queries[:3]]
    assert all(answers), answers
    res = invoke("query", queries[0], "--db", db_url)
    assert res.exit_code == 0 and "learning_rate" in res.output
    # seed retraining trials share the best trial's parameters: the examples leave them out
    assert invoke("ensemble", "digits-mlp", "--method", "seeds", "--k", "2", "--no-wait",
                  "--db", db_url, "--redis", redis_url).exit_code == 0
    drain(tmp_path, db_url, redis_url, n=1)
    seeds = {r[0] for r in rows(engine, "SELECT t.id FROM trials t JOIN stages st ON "
                                        "st.id = t.stage_id WHERE st.kind = 'seeds' AND "
                                        "t.status = 'done'")}
    assert len(seeds) == 2
    best = rows(engine, queries[0])
    assert best and not {r[0] for r in best} & seeds
    assert [r[0] for r in rows(engine, queries[2])] == [0, 1]  # stage idx, search stages only


def test_ctrl_c_stops_everything_run_started(tmp_path: Path) -> None:
    import signal
    import time

    cfg = write_config(tmp_path / "c.yaml", stages=[{"trials": 2000, "epochs": 5},
                                                    {"trials": 4, "epochs": 3}])
    queue = f"q{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", str(cfg),
                             "--workers", "2", "--db", f"sqlite:///{tmp_path}/r.db", "--queue",
                             queue], cwd=ROOT, env=_env_without_redis(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    engine = make_engine(f"sqlite:///{tmp_path}/r.db")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if scalar(engine, "SELECT COUNT(*) FROM curves"):
                break
        except Exception:  # noqa: BLE001 - the schema may not exist yet
            pass
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "hpsweep resume" in err.decode()
    assert subprocess.run(["pgrep", "-f", f"--queue {queue}"], capture_output=True).stdout == b""
    assert not _embedded_redis_left(tmp_path)
    assert scalar(engine, "SELECT status FROM sweeps") == "running"  # resumable, not lost
