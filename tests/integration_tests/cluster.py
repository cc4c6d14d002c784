"""Helpers for the many-machines tests: "hosts" are folders, workers are real processes.

A simulated host is a folder with its own working directory, HOME and TMPDIR
(so its own dataset cache, ``$HOME/.cache/hpsweep/datasets``) and an
environment stripped of every ``HPSWEEP_*`` variable: a worker started there
shares nothing with the others but the Redis and database URLs it is given.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

REPO = Path(__file__).resolve().parents[2]
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
START_LINE = re.compile(r"trial (\d+): start\b")
END_LINE = re.compile(r"trial (\d+): (done|diverged|failed|cancelled|released|noop) after")


@dataclass(frozen=True)
class Host:
    """One simulated machine: a working directory with its own HOME and TMPDIR."""

    root: Path

    @property
    def cwd(self) -> Path:
        return self.root / "work"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def cache(self) -> Path:
        return self.home / ".cache" / "hpsweep" / "datasets"

    def make(self) -> Host:
        for d in (self.cwd, self.home, self.root / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("HPSWEEP_") and k not in ("XDG_CACHE_HOME", "PYTHONPATH")}
        env.update(HOME=str(self.home), TMPDIR=str(self.root / "tmp"), PYTHONPATH=str(REPO),
                   PYTHONUNBUFFERED="1", **{v: "1" for v in BLAS_VARS})
        env.update(extra)
        return env


def hpsweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "coordinator.cli", *args]


@dataclass
class WorkerProc:
    """An ``hpsweep worker`` process whose stderr goes to ``log``."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    signalled: bool = False

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def started_trials(self) -> list[int]:
        return [int(m) for m in START_LINE.findall(self.text())]

    def ended_trials(self) -> list[tuple[int, str]]:
        return [(int(t), s) for t, s in END_LINE.findall(self.text())]

    def sigterm(self) -> None:
        """One SIGTERM (a second one would ask RQ for a cold shutdown)."""
        if self.proc.poll() is None and not self.signalled:
            self.signalled = True
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 15.0) -> int:
        """The exit code; SIGKILL to the process group after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


def start_worker(host: Host, name: str | None, args: list[str],
                 env: dict[str, str] | None = None) -> WorkerProc:
    """``hpsweep worker ARGS`` started from ``host`` (its cwd, HOME, TMPDIR)."""
    log = host.root / f"worker-{name or 'anon'}.log"
    cmd = hpsweep_cmd("worker", *(["--name", name] if name else []), *args)
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=host.cwd, env=env or host.env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    return WorkerProc(name or "", proc, log)


def stop_all(workers: list[WorkerProc]) -> None:
    for w in workers:
        w.sigterm()
    for w in workers:
        w.wait()


def launch(host: Host, config: Path, db_url: str, redis_url: str) -> str:
    """``hpsweep launch CONFIG`` run from ``host`` (CONFIG relative to it when inside it);
    returns the sweep's name."""
    path = config.relative_to(host.cwd) if config.is_relative_to(host.cwd) else config
    out = subprocess.run(hpsweep_cmd("launch", str(path), "--db", db_url, "--redis", redis_url),
                         cwd=host.cwd, env=host.env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def write_blobs(path: Path, n: int = 600, d: int = 8, k: int = 3, seed: int = 0) -> Path:
    """A user's .npz dataset: ``k`` Gaussian blobs in ``d`` dimensions."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, size=(k, d))
    y = rng.integers(0, k, size=n)
    X = (centers[y] + rng.normal(0.0, 1.5, size=(n, d))).astype(np.float32)
    np.savez(path, X=X, y=y.astype(np.int64))
    return path


def write_config(path: Path, dataset: str, stages: list[tuple[int, int]], *, name: str = "mh",
                 seed: int = 0, hidden: tuple[int, int] = (16, 64), batch_size: int = 32,
                 extra: str = "") -> Path:
    """A sweep file over learning rate and hidden size with the given (trials, epochs)."""
    stage_lines = "\n".join(f"  - {{trials: {t}, epochs: {e}}}" for t, e in stages)
    path.write_text(f"""\
name: {name}
dataset: {dataset}
seed: {seed}
train:
  depth: 1
  batch_size: {batch_size}
  update_rule: adam
space:
  learning_rate: {{dist: log_uniform, low: 1.0e-3, high: 3.0e-2}}
  hidden_size: {{dist: int_log_uniform, low: {hidden[0]}, high: {hidden[1]}}}
stages:
{stage_lines}
{extra}""")
    return path


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(text(sql), params)]


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               on_timeout: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{on_timeout()}")


def sweep_status(engine: Engine, name: str) -> str | None:
    got = rows(engine, "SELECT status FROM sweeps WHERE name = :n", n=name)
    return got[0][0] if got else None


def worker_logs(workers: list[WorkerProc]) -> str:
    return "\n".join(f"--- {w.name or w.log.name}\n{w.text()[-3000:]}" for w in workers)


def assert_sweep_complete(engine: Engine, name: str) -> None:
    """Sweep done; every trial done or diverged; done trials have rows for epochs 1..E,
    once each."""
    (sweep_id, status), = rows(engine, "SELECT id, status FROM sweeps WHERE name = :n", n=name)
    assert status == "done"
    trials = rows(engine, "SELECT id, status, epochs FROM trials WHERE sweep_id = :s ORDER BY id",
                  s=sweep_id)
    assert trials
    assert {st for _, st, _ in trials} <= {"done", "diverged"}, trials
    curves: dict[int, list[int]] = {}
    for tid, epoch in rows(engine, "SELECT c.trial_id, c.epoch FROM curves c JOIN trials t "
                                   "ON t.id = c.trial_id WHERE t.sweep_id = :s", s=sweep_id):
        curves.setdefault(tid, []).append(epoch)
    for tid, st, epochs in trials:
        got = sorted(curves.get(tid, []))
        if st == "done":
            assert got == list(range(1, epochs + 1)), (tid, got)
        else:  # diverged: epochs 1..k, the last one the epoch that blew up
            assert got == list(range(1, len(got) + 1)) and len(got) <= epochs, (tid, got)
