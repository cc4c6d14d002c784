"""A typo cannot take the machine down: absurd trial counts are refused (exit 2, the key
and the limit named, --max-trials overrides), and a launch streams its trials in
batches, so its memory does not grow with their number and it stays one atomic unit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis
from sqlalchemy import Engine

from coordinator import launch as launch_mod
from coordinator.cli import main
from coordinator.config import ConfigError, load_config
from storage.db import make_engine
from tests.support.configs import write_config
from tests.support.db import rows
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args))


def stages(trials: int) -> list[dict]:
    return [{"trials": trials, "epochs": 1}]


def test_an_absurd_trial_count_exits_2_naming_the_key_and_the_limit(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", stages=stages(100_000_000))
    res = invoke("launch", str(cfg), "--db", f"sqlite:///{tmp_path}/x.db",
                 "--redis", "redis://127.0.0.1:1/0")
    assert res.exit_code == 2, res.output
    assert ("stages[0].trials: at most 1000000 trials per stage, got 100000000; pass "
            "--max-trials N to allow more") in res.output
    assert not (tmp_path / "x.db").exists()


def test_max_trials_moves_the_limit_both_ways(tmp_path: Path, sqlite_url: str,
                                              redis_url: str) -> None:
    cfg = write_config(tmp_path / "c.yaml", stages=[{"trials": 5, "epochs": 1},
                                                    {"trials": 8, "epochs": 1}])
    res = invoke("launch", str(cfg), "--db", sqlite_url, "--redis", redis_url,
                 "--max-trials", "7")
    assert res.exit_code == 2 and "stages[1].trials: at most 7 trials per stage, got 8" \
        in res.output, res.output
    res = invoke("launch", str(cfg), "--db", sqlite_url, "--redis", redis_url,
                 "--max-trials", "8")
    assert res.exit_code == 0, res.output
    big = write_config(tmp_path / "big.yaml", stages=stages(2_000_000))
    assert load_config(big, max_trials=None).stages[0].trials == 2_000_000
    with pytest.raises(ConfigError, match="at most 1000000"):
        load_config(big)


def _trial_rows(engine: Engine, sweep_name: str) -> list[tuple]:
    return rows(engine, "SELECT t.idx, t.seed, t.epochs, p.name, p.value, p.value_text "
                        "FROM trials t JOIN sweeps s ON s.id = t.sweep_id "
                        "JOIN params p ON p.trial_id = t.id WHERE s.name = :n "
                        "ORDER BY t.idx, p.name", n=sweep_name)


def test_batches_give_the_same_trials_and_enqueue_them_in_order(
        tmp_path: Path, db_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=stages(11)))
    dataset = launch_mod.prepare_dataset(cfg)
    engine = make_engine(db_url)
    whole = launch_mod.create_sweep(engine, cfg, "q", dataset)  # one batch
    monkeypatch.setattr(launch_mod, "LAUNCH_BATCH", 4)  # 4 + 4 + 3
    conn = Redis.from_url(redis_url)
    made = launch_mod.launch(engine, conn, cfg, "q", dataset)
    assert made.enqueued and made.n_trials == 11
    assert _trial_rows(engine, made.name) == _trial_rows(engine, whole.name)
    assert len(_trial_rows(engine, made.name)) == 11 * len(rows(
        engine, "SELECT DISTINCT name FROM params"))
    ids = [i for (i,) in rows(engine, "SELECT id FROM trials WHERE stage_id = :s ORDER BY idx",
                             s=made.stage_id)]
    queued = [j.decode() for j in conn.lrange("rq:queue:q", 0, -1)]
    assert queued == [f"trial-{i}" for i in ids]
    engine.dispose()


def _launch_peak(trials: int, db_url: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "launch_memory.py"),
                          "--child", str(trials), "--db", db_url],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.slow
def test_launch_memory_does_not_grow_with_the_trial_count(tmp_path: Path) -> None:
    """Peak RSS growth of launching 1k and 12k trials (fresh processes): the same within
    a few MB (one batch in flight). Before streaming it grew ~12 KB per trial: 140 MB
    more for the 11k extra trials. benchmarks/launch_memory.py measures bigger counts."""
    small = _launch_peak(1_000, f"sqlite:///{tmp_path}/small.db")
    large = _launch_peak(12_000, f"sqlite:///{tmp_path}/large.db")
    grown = (large["after"] - large["before"]) - (small["after"] - small["before"])
    assert grown < 40, f"launch memory grew by {grown:.0f} MB for 11,000 more trials"
