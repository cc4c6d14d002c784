"""Shared pieces of the fault tests: private Redis servers, worker processes, datasets,
and the chaos-free reference run whose curves every faulty run must reproduce exactly.

Workers are real ``hpsweep worker`` processes (their own session, stderr to a log
file so a full pipe can never stall them); Redis is a private ``redis-server`` on a
free port without persistence, so a test may kill and restart it.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Engine, text

ROOT = Path(__file__).resolve().parents[2]
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
FAST = ("--lease-seconds", "2", "--reconcile-every", "0.5")

Curves = dict[tuple[int, int], tuple[str, list[float | None]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` on a fixed port, without persistence; kill and restart it."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir, self.port = directory, port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        from coordinator.embedded import redis_server_binary

        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        assert wait_for(self.answers, timeout), f"redis-server did not start on {self.port}"
        return self

    def answers(self) -> bool:
        try:
            return bool(Redis.from_url(self.url, socket_connect_timeout=0.2).ping())
        except (RedisError, OSError):
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def client(self) -> Redis:
        return Redis.from_url(self.url)


@dataclass
class Worker:
    """One ``hpsweep worker`` process; its stderr goes to ``log``."""

    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole worker (its process group) and reap it."""
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _write_locked(db_file: Path) -> bool:
    conn = sqlite3.connect(db_file, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        return True
    finally:
        conn.close()


def freeze_outside_transaction(worker: Worker, db_file: Path, tries: int = 200) -> None:
    """SIGSTOP ``worker`` at a moment it holds no SQLite write lock.

    A process frozen inside a write transaction blocks every writer of the file until it
    resumes: SQLite has no lock timeout for the holder. The test wants a frozen *lease*.
    """
    for _ in range(tries):
        worker.signal(signal.SIGSTOP)
        assert wait_for(lambda: _state(worker.pid) == "T", 5), "worker did not stop"
        if not _write_locked(db_file):
            return
        worker.signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"worker {worker.pid} always held the write lock when stopped")


def observer(db_url: str) -> Engine:
    """A read-only engine for the test's own queries: never takes the write lock."""
    from storage.db import make_engine

    return make_engine(db_url, readonly=True)


def hpsweep(*args: str) -> list[str]:
    return [sys.executable, "-m", "coordinator.cli", *args]


def env_for(db_url: str, redis_url: str, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPSWEEP_")}
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]  # + test plug-ins
    env.update(HPSWEEP_DB=db_url, HPSWEEP_REDIS=redis_url, HPSWEEP_CACHE=str(cache),
               PYTHONPATH=os.pathsep.join(path), PYTHONUNBUFFERED="1",
               **{v: "1" for v in BLAS_VARS})
    return env


class Fleet:
    """Starts and tracks the worker processes of one test; stops them all at the end."""

    def __init__(self, tmp: Path, db_url: str, redis_url: str, *args: str) -> None:
        self.tmp, self.db_url, self.redis_url, self.args = tmp, db_url, redis_url, args
        self.workers: list[Worker] = []

    def start(self, *extra: str) -> Worker:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                hpsweep("worker", *self.args, *extra), cwd=ROOT,
                env=env_for(self.db_url, self.redis_url, self.tmp / "cache"),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)
        w = Worker(proc, log)
        self.workers.append(w)
        return w

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.alive()]

    def stop_all(self) -> None:
        for w in self.workers:
            w.signal(signal.SIGCONT)
            w.signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                w.kill()

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {w.log.name} (pid {w.pid}, rc {w.proc.poll()})\n{w.text()[-tail:]}"
                         for w in self.workers)


def launch(config: Path, db_url: str, redis_url: str, *, timeout: float = 60) -> \
        subprocess.CompletedProcess[str]:
    """``hpsweep launch CONFIG`` as a user runs it."""
    return subprocess.run(hpsweep("launch", str(config), "--db", db_url, "--redis", redis_url),
                          cwd=ROOT, env=env_for(db_url, redis_url, config.parent / "cache"),
                          capture_output=True, text=True, timeout=timeout)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


# ---------------------------------------------------------------- data and configs


def write_dataset(path: Path, n: int = 12_000, d: int = 128, classes: int = 10, noise: float = 8.0,
                  seed: int = 0) -> Path:
    """Gaussian blobs, float32: with hidden 512 an epoch takes ~0.1 s on one core."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d)).astype(np.float32)
    y = rng.integers(0, classes, size=n)
    X = (centers[y] + noise * rng.normal(size=(n, d))).astype(np.float32)
    np.savez(path, X=X, y=y.astype(np.int64))
    return path


def write_config(path: Path, dataset: Path | str, stages: list[tuple[int, int]], *,
                 hidden: int = 512, **top: Any) -> Path:
    cfg: dict[str, Any] = {
        "name": "fault",
        "dataset": str(dataset),
        "seed": 3,
        "train": {"depth": 1, "hidden_size": hidden, "batch_size": 64, "update_rule": "momentum",
                  "reg": 1e-4},
        "space": {"learning_rate": {"dist": "log_uniform", "low": 1e-3, "high": 3e-2}},
        "stages": [{"trials": t, "epochs": e} for t, e in stages],
    }
    cfg.update(top)
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------- curves


def _val_loss(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def sweep_curves(engine: Engine, sweep_id: int) -> Curves:
    """(stage idx, trial idx) -> (status, val_loss of epochs 1..n in order)."""
    out: Curves = {}
    for st, idx, status in rows(engine, """
            SELECT s.idx, t.idx, t.status FROM trials t JOIN stages s ON s.id = t.stage_id
            WHERE t.sweep_id = :s""", s=sweep_id):
        out[(st, idx)] = (status, [])
    for st, idx, epoch, loss in rows(engine, """
            SELECT s.idx, t.idx, c.epoch, c.val_loss FROM curves c
            JOIN trials t ON t.id = c.trial_id JOIN stages s ON s.id = t.stage_id
            WHERE t.sweep_id = :s ORDER BY s.idx, t.idx, c.epoch""", s=sweep_id):
        losses = out[(st, idx)][1]
        assert epoch == len(losses) + 1, f"trial ({st}, {idx}): epoch {epoch} after {losses}"
        losses.append(_val_loss(loss))
    return out


_REFERENCE: dict[bytes, Curves] = {}


def reference_curves(config: Path, tmp: Path) -> Curves:
    """The chaos-free run of ``config``: every trial trained in this process, one attempt
    each, stage after stage. Cached by the config file's bytes (same dataset path)."""
    key = config.read_bytes() + Path(yaml.safe_load(config.read_text())["dataset"]).read_bytes()
    if key not in _REFERENCE:
        _REFERENCE[key] = _run_reference(config, tmp)
    return _REFERENCE[key]


def _run_reference(config: Path, tmp: Path) -> Curves:
    from threadpoolctl import threadpool_limits

    from coordinator.config import load_config
    from coordinator.launch import create_sweep, prepare_dataset
    from coordinator.stages import advance
    from storage.db import make_engine, transact
    from storage.sweeps import trial_ids_by_idx
    from worker.data import DatasetCache
    from worker.trainer import TrialContext, run_attempt

    tmp.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{tmp / 'reference.db'}")
    cfg = load_config(config)
    made = create_sweep(engine, cfg, "reference", prepare_dataset(cfg))
    ctx = TrialContext(engine=engine, worker="reference", lease_seconds=600.0,
                       datasets=DatasetCache(None))
    trial_ids = transact(engine, lambda s: trial_ids_by_idx(s, made.stage_id))
    with threadpool_limits(limits=1):  # the workers pin BLAS to one thread too
        while trial_ids:
            stage_id = None
            for tid in trial_ids:
                outcome = run_attempt(ctx, tid)
                assert outcome.status in ("done", "diverged"), outcome
                stage_id = outcome.stage_id
            assert stage_id is not None
            advanced = advance(engine, stage_id)
            assert advanced is not None
            trial_ids = list(advanced.trial_ids)
    curves = sweep_curves(engine, made.sweep_id)
    engine.dispose()
    return curves


def assert_curves_match(engine: Engine, sweep_id: int, reference: Curves) -> None:
    """Curve OK for every trial: the same trials, statuses, and val_loss per epoch, exactly,
    as the uninterrupted run (one row per epoch 1..E is checked by ``sweep_curves``)."""
    got = sweep_curves(engine, sweep_id)
    assert sorted(got) == sorted(reference), (sorted(got), sorted(reference))
    for key, (status, losses) in reference.items():
        g_status, g_losses = got[key]
        assert g_status == status, f"trial {key}: status {g_status}, reference {status}"
        assert g_losses == losses, f"trial {key}: val_loss {g_losses} != reference {losses}"


def sweep_id_of(engine: Engine, name: str) -> int:
    return int(scalar(engine, "SELECT id FROM sweeps WHERE name = :n", n=name))


def epochs_recorded(engine: Engine, sweep_id: int) -> int:
    """Curve rows written so far for the sweep's trials."""
    return int(scalar(engine, "SELECT COUNT(*) FROM curves c JOIN trials t ON t.id = "
                              "c.trial_id WHERE t.sweep_id = :s", s=sweep_id))


def sweep_status(engine: Engine, sweep_id: int) -> str:
    return str(scalar(engine, "SELECT status FROM sweeps WHERE id = :s", s=sweep_id))
