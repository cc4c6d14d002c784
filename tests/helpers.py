"""Small builders shared by tests: configs, sweeps, worker processes, row counts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, text

ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, **overrides: Any) -> Path:
    """A small, fast spiral sweep config (override any top-level key)."""
    cfg: dict[str, Any] = {
        "name": "t",
        "dataset": "spiral",
        "seed": 0,
        "train": {"depth": 1, "hidden_size": 16, "batch_size": 64, "update_rule": "sgd"},
        "space": {"learning_rate": {"dist": "log_uniform", "low": 1e-3, "high": 1.0},
                  "reg": {"dist": "log_uniform", "low": 1e-6, "high": 1e-2}},
        "stages": [{"trials": 6, "epochs": 1}, {"trials": 3, "epochs": 3}],
    }
    cfg.update(overrides)
    path.write_text(yaml.safe_dump(cfg))
    return path


def worker_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "coordinator.cli", "worker", *args]


def start_worker(db_url: str, redis_url: str, *args: str, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full_env = dict(os.environ, HPSWEEP_DB=db_url, HPSWEEP_REDIS=redis_url,
                    PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    full_env.update(env or {})
    return subprocess.Popen(worker_cmd(*args), cwd=cwd or ROOT, env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def assert_curves_complete(engine: Engine, sweep_id: int | None = None) -> None:
    """Every done trial has exactly one curve row per epoch, numbered 1..epochs."""
    where = "WHERE t.status = 'done'" + (f" AND t.sweep_id = {int(sweep_id)}" if sweep_id else "")
    bad = rows(engine, f"""
        SELECT t.id, t.epochs, COUNT(c.epoch), MIN(c.epoch), MAX(c.epoch)
        FROM trials t LEFT JOIN curves c ON c.trial_id = t.id {where}
        GROUP BY t.id, t.epochs
        HAVING COUNT(c.epoch) <> t.epochs OR MIN(c.epoch) <> 1 OR MAX(c.epoch) <> t.epochs""")
    assert bad == [], f"trials with incomplete or extra curve rows: {bad}"
