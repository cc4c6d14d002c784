"""Real ``hpsweep`` processes for tests and benchmarks: one worker-process class, a fleet of
them on one database and Redis, simulated hosts, and ``hpsweep launch`` as a user runs it.

A worker runs in its own session (so a kill reaches its whole process group), with stderr to
a log file (a full pipe can never stall it), BLAS pinned to one thread, and an environment
without the caller's ``HPSWEEP_*`` variables: it shares only what the test gives it.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from tests.support.db import observer, sweep_id_of, wait_for

ROOT = Path(__file__).resolve().parents[2]
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
START_LINE = re.compile(r"trial (\d+): start\b")
END_LINE = re.compile(r"trial (\d+): (done|diverged|failed|cancelled|released|noop) after")


def hpsweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "coordinator.cli", *args]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``HPSWEEP_*`` (and a cache-folder override), the
    repository importable (then the caller's PYTHONPATH: a test's model plug-ins), output
    unbuffered, BLAS on one thread; then ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HPSWEEP_") and k != "XDG_CACHE_HOME"}
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env.update(PYTHONPATH=os.pathsep.join(path), PYTHONUNBUFFERED="1",
               **{v: "1" for v in BLAS_VARS})
    env.update(extra)
    return env


def worker_env(db_url: str, redis_url: str, cache: Path, **extra: str) -> dict[str, str]:
    """``clean_env`` naming the database, the Redis and the dataset cache folder."""
    return clean_env(HPSWEEP_DB=db_url, HPSWEEP_REDIS=redis_url, HPSWEEP_CACHE=str(cache),
                     **extra)


@dataclass
class WorkerProc:
    """One ``hpsweep worker`` process (its own session); its stderr goes to ``log``."""

    proc: subprocess.Popen[bytes]
    log: Path
    name: str = ""
    signalled: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def started_trials(self) -> list[int]:
        return [int(m) for m in START_LINE.findall(self.text())]

    def ended_trials(self) -> list[tuple[int, str]]:
        return [(int(t), s) for t, s in END_LINE.findall(self.text())]

    def signal(self, sig: int) -> None:
        """``sig`` to the whole process group, if the worker still runs."""
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def sigterm(self) -> None:
        """One SIGTERM to the worker itself (a second one would ask RQ for a cold shutdown)."""
        if self.alive() and not self.signalled:
            self.signalled = True
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole worker (its process group) and reap it."""
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def wait(self, timeout: float = 15.0) -> int:
        """The exit code; SIGKILL to the process group after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def stop(self, timeout: float = 15.0) -> int:
        """SIGCONT and SIGTERM to the group, then SIGKILL after ``timeout``; the exit code."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def finish(self, timeout: float = 120.0) -> str:
        """Wait for a ``--burst`` worker to end; it must exit 0. Its log."""
        code = self.wait(timeout)
        assert code == 0, f"worker exited {code}:\n{self.text()[-3000:]}"
        return self.text()


def start_worker(args: Sequence[str], *, log: Path, env: dict[str, str], cwd: Path = ROOT,
                 name: str | None = None) -> WorkerProc:
    """``hpsweep worker [--name NAME] ARGS`` in ``cwd`` with exactly ``env``."""
    cmd = hpsweep_cmd("worker", *(["--name", name] if name else []), *args)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    return WorkerProc(proc, log, name or "")


def stop_all(workers: Sequence[WorkerProc], timeout: float = 15.0) -> None:
    """SIGTERM every worker (SIGCONT first: a frozen one must see it), then wait for each."""
    for w in workers:
        w.signal(signal.SIGCONT)
        w.sigterm()
    for w in workers:
        w.wait(timeout)


def worker_logs(workers: Sequence[WorkerProc], tail: int = 3000) -> str:
    return "\n".join(f"--- {w.name or w.log.name} (pid {w.pid}, rc {w.proc.poll()})\n"
                     f"{w.text()[-tail:]}" for w in workers)


def run_hpsweep(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``hpsweep ARGS`` as a user runs it in ``cwd`` (default environment: ``clean_env``)."""
    return subprocess.run(hpsweep_cmd(*args), cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def launch(config: Path, db_url: str, redis_url: str, *, cwd: Path = ROOT,
           env: dict[str, str] | None = None) -> str:
    """``hpsweep launch CONFIG`` run in ``cwd`` (CONFIG relative to it when inside it); it
    must succeed. The sweep's name."""
    path = config.relative_to(cwd) if config.is_relative_to(cwd) else config
    out = run_hpsweep("launch", str(path), "--db", db_url, "--redis", redis_url, cwd=cwd,
                      env=env or clean_env(HPSWEEP_CACHE=str(config.parent / "cache")),
                      timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


class Fleet:
    """The worker processes of one test, on its database and Redis (``args`` given to each);
    stops them all at the end. Its ``engine`` is a read-only observer of the database."""

    def __init__(self, tmp: Path, db_url: str, redis_url: str, *args: str) -> None:
        self.tmp, self.db_url, self.redis_url, self.args = tmp, db_url, redis_url, args
        self.workers: list[WorkerProc] = []
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = observer(self.db_url)
        return self._engine

    def env(self, **extra: str) -> dict[str, str]:
        return worker_env(self.db_url, self.redis_url, self.tmp / "cache", **extra)

    def start(self, *extra: str) -> WorkerProc:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        w = start_worker([*self.args, *extra], log=log, env=self.env())
        self.workers.append(w)
        return w

    def drain(self, *extra: str, n: int = 1, timeout: float = 120.0) -> str:
        """``n`` ``--burst`` workers to the end of the queue; their logs."""
        burst = [self.start("--burst", *extra) for _ in range(n)]
        return "\n".join(w.finish(timeout) for w in burst)

    def launch(self, config: Path, redis_url: str | None = None) -> int:
        """``hpsweep launch CONFIG`` on the fleet's database (and Redis, unless another is
        named); the new sweep's id."""
        name = launch(config, self.db_url, redis_url or self.redis_url, env=self.env())
        return sweep_id_of(self.engine, name)

    def live(self) -> list[WorkerProc]:
        return [w for w in self.workers if w.alive()]

    def stop_all(self) -> None:
        stop_all(self.workers)
        if self._engine is not None:
            self._engine.dispose()

    def logs(self, tail: int = 3000) -> str:
        return worker_logs(self.workers, tail)


@dataclass(frozen=True)
class Host:
    """A simulated machine: a folder with its own working directory, HOME and TMPDIR (so
    its own dataset cache, ``$HOME/.cache/hpsweep/datasets``); it shares nothing with the
    others but the URLs it is given."""

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
        return clean_env(HOME=str(self.home), TMPDIR=str(self.root / "tmp"),
                         PYTHONPATH=str(ROOT), **extra)

    def worker(self, name: str | None, args: Sequence[str],
               env: dict[str, str] | None = None) -> WorkerProc:
        """``hpsweep worker ARGS`` started from this host."""
        return start_worker(args, log=self.root / f"worker-{name or 'anon'}.log",
                            env=env or self.env(), cwd=self.cwd, name=name)

    def launch(self, config: Path, db_url: str, redis_url: str) -> str:
        return launch(config, db_url, redis_url, cwd=self.cwd, env=self.env())


# ---------------------------------------------------------------- freezing a SQLite writer


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


def freeze_outside_transaction(worker: WorkerProc, db_file: Path, tries: int = 200) -> None:
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
