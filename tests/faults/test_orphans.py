"""Whatever hpsweep starts dies with it (DESIGN principle 8): ``kill -9`` or SIGHUP of
``run``, ``worker --processes`` and ``ensemble --workers`` leaves no process behind.

Processes are identified precisely: the tree under the command's pid is read from /proc
(with each process's start time, so a recycled pid is never mistaken for it) before the
kill; other suites on this machine run their own workers and Redis servers.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator.embedded import EmbeddedRedis
from storage.db import make_engine
from tests.support.configs import write_config as write_spiral
from tests.support.db import assert_curves_complete, rows, scalar, wait_for
from tests.support.processes import ROOT, Fleet, clean_env, hpsweep_cmd, run_hpsweep

pytestmark = [pytest.mark.fault, pytest.mark.integration,
              pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")]

BOTH_BACKENDS = pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
DIES_WITHIN = 5.0  # seconds: the promise
HANDED_BACK = "worker stopped; resumable"  # trials.error of a trial a stopped worker gave back


@dataclass(frozen=True)
class Proc:
    pid: int
    start: str  # kernel start time: tells this process from a later one with its pid
    cmd: str

    def running(self) -> bool:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return False
        return stat[0] not in ("Z", "X") and stat[19] == self.start


def _proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, IndexError):
        return None
    return Proc(pid, stat[19], cmd)


def descendants(pid: int) -> list[Proc]:
    """Every live process below ``pid`` (children of all its threads, recursively)."""
    found: dict[int, Proc] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            for kid in kids:
                proc = _proc(kid)
                if kid not in found and proc is not None:
                    found[kid] = proc
                    todo.append(kid)
    return list(found.values())


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    """No Redis or database URL from the caller; temporary files (the embedded Redis's
    folder) in ``tmp``; one BLAS thread."""
    return clean_env(TMPDIR=str(tmp), HPSWEEP_CACHE=str(tmp / "cache"), **extra)


def _start(tmp_path: Path, args: list[str], **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    log = tmp_path / f"{args[0]}-{uuid.uuid4().hex[:6]}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(hpsweep_cmd(*args), cwd=ROOT, env=_env(tmp, **env),
                                stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT)
    return proc, log


def _mid_training(proc: subprocess.Popen[bytes], log: Path, db: str, children: int,
                  recorded: list[Proc], where: str = "") -> list[Proc]:
    """Wait until curve rows are being written and ``children`` processes run below
    ``proc``; returns them (``proc`` itself is added to ``recorded`` at once, they too)."""
    engine = None  # made once the run has created the database (readers never create one)

    def curves() -> int:
        nonlocal engine
        try:
            engine = engine or make_engine(db, readonly=True)
            return int(scalar(engine, f"SELECT COUNT(*) FROM curves c JOIN trials t "
                                      f"ON t.id = c.trial_id {where}"))
        except Exception:  # noqa: BLE001 - the database may not exist yet
            return 0

    recorded.append(_proc(proc.pid) or Proc(proc.pid, "", ""))
    ok = wait_for(lambda: proc.poll() is None and curves() > 0
                  and len(descendants(proc.pid)) >= children, 300, interval=0.1)
    if engine is not None:
        engine.dispose()
    tree = descendants(proc.pid)
    recorded.extend(tree)
    assert ok, f"never mid-training (rc {proc.poll()}):\n{log.read_text()[-3000:]}"
    return tree


def _assert_all_gone(tree: list[Proc], within: float, log: Path) -> None:
    ok = wait_for(lambda: not any(p.running() for p in tree), within, interval=0.05)
    assert ok, f"still running {within} s later: {[p for p in tree if p.running()]}\n" \
               f"{log.read_text()[-3000:]}"


@pytest.fixture
def recorded() -> Iterator[list[Proc]]:
    """Processes a test recorded; whatever still runs at the end is killed, so a failing
    test never leaves work to the other suites on this machine."""
    procs: list[Proc] = []
    yield procs
    for p in procs:
        if p.running():
            os.kill(p.pid, signal.SIGKILL)


def _queue() -> str:
    return f"q{uuid.uuid4().hex[:8]}"


def _long_sweep(tmp_path: Path, trials: int = 2000, epochs: int = 5) -> Path:
    return write_spiral(tmp_path / "c.yaml", stages=[{"trials": trials, "epochs": epochs},
                                                     {"trials": 2, "epochs": 2}])


def _workers(tree: list[Proc]) -> list[Proc]:
    return [p for p in tree if " worker " in p.cmd]


def _no_trial_lost(db: str, sweep_status: str = "running") -> None:
    """A worker stopped by its parent's death hands its trial back: none is left
    ``running`` (waiting for its lease), failed, or charged a failed attempt (as when
    the embedded Redis dying beside it broke the trial in flight). A hand-back uses no
    attempt: a stopping worker that kept taking jobs (RQ's stop swallowed between dequeue
    and start) once claimed and handed back every queued trial until all were exhausted."""
    engine = make_engine(db, readonly=True)
    try:
        statuses = dict(rows(engine, "SELECT status, COUNT(*) FROM trials GROUP BY status"))
        errors = rows(engine, "SELECT id, error FROM trials WHERE error <> :handed_back",
                      handed_back=HANDED_BACK)
        charged = rows(engine, "SELECT id, attempts FROM trials "
                               "WHERE status = 'queued' AND attempts > 0")
        assert scalar(engine, "SELECT status FROM sweeps") == sweep_status
    finally:
        engine.dispose()
    assert set(statuses) <= {"queued", "done", "diverged"}, statuses
    assert errors == [], errors
    assert charged == [], charged


# ---------------------------------------------------------------- hpsweep run


@BOTH_BACKENDS
def test_kill_9_of_run_leaves_no_process_and_no_stale_folder(
        tmp_path: Path, recorded: list[Proc], db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    proc, log = _start(tmp_path, ["run", str(_long_sweep(tmp_path)), "--workers", "2",
                                  "--db", db, "--queue", _queue()])
    tree = _mid_training(proc, log, db, 3, recorded)
    assert len(_workers(tree)) == 2 and sum("redis-server" in p.cmd for p in tree) == 1, tree
    proc.kill()
    proc.wait()
    _assert_all_gone(tree, DIES_WITHIN, log)
    _no_trial_lost(db)

    # the dead run's folder is left behind; the next embedded Redis removes it
    tmp = tmp_path / "tmp"
    [left] = tmp.glob("hpsweep-redis-*")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    server = EmbeddedRedis()
    url = server.start()
    try:
        assert not left.exists()
        assert [p.name for p in tmp.glob("hpsweep-redis-*")] == [Path(url[7:]).parent.name]
    finally:
        server.stop()


@BOTH_BACKENDS
def test_sighup_of_run_stops_everything_and_the_sweep_resumes(
        tmp_path: Path, recorded: list[Proc], db: str, redis_url: str) -> None:
    queue = _queue()  # its own: no other suite's worker on this Redis takes its jobs
    proc, log = _start(tmp_path, ["run", str(_long_sweep(tmp_path, trials=150, epochs=2)),
                                  "--workers", "2", "--db", db, "--queue", queue])
    tree = _mid_training(proc, log, db, 3, recorded)
    proc.send_signal(signal.SIGHUP)  # what closing the terminal sends
    assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]  # as for Ctrl-C
    assert "hpsweep resume" in log.read_text()
    _assert_all_gone(tree, 0, log)  # stopped before run returned, not left to the kernel
    assert list((tmp_path / "tmp").glob("hpsweep-redis-*")) == []
    _no_trial_lost(db)

    engine = make_engine(db, readonly=True)
    name = scalar(engine, "SELECT name FROM sweeps")
    resumed = run_hpsweep("resume", name, "--db", db, "--redis", redis_url,
                          env=_env(tmp_path / "tmp"))
    assert resumed.returncode == 0, resumed.stderr
    log = Fleet(tmp_path, db, redis_url).drain("--queue", queue, "--log-level", "warning",
                                               timeout=300)
    try:
        state = rows(engine, """SELECT st.idx, st.status, t.status, COUNT(*) FROM trials t
                                JOIN stages st ON st.id = t.stage_id
                                GROUP BY st.idx, st.status, t.status""")
        assert scalar(engine, "SELECT status FROM sweeps") == "done", \
            f"{state}\n{resumed.stdout}\n{log[-3000:]}"
        assert_curves_complete(engine)
    finally:
        engine.dispose()


def _controlling_terminal() -> None:  # preexec_fn, after setsid: stdin's tty becomes ours
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A pseudo-terminal the command runs in, its output copied to ``log``; ``close``
    hangs it up as closing a terminal window does (the kernel sends SIGHUP)."""

    def __init__(self, log: Path) -> None:
        self.master, self.slave = os.openpty()
        self.log, self._stop = log, threading.Event()
        self._thread = threading.Thread(target=self._copy, daemon=True)

    def _copy(self) -> None:
        with open(self.log, "ab") as out:
            while not self._stop.is_set():
                if select.select([self.master], [], [], 0.1)[0]:
                    try:
                        out.write(os.read(self.master, 65536))
                    except OSError:
                        return

    def start(self, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=self.slave,
                                stdout=self.slave, stderr=self.slave, start_new_session=True,
                                preexec_fn=_controlling_terminal)
        os.close(self.slave)
        self._thread.start()
        return proc

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        os.close(self.master)


def _run_in_terminal(tmp_path: Path, db: str, recorded: list[Proc], prefix: list[str]) -> \
        tuple[subprocess.Popen[bytes], list[Proc], Path]:
    """``hpsweep run`` mid-training in a terminal that is then closed."""
    log = tmp_path / "terminal.log"
    terminal = Terminal(log)
    (tmp_path / "tmp").mkdir()
    run = hpsweep_cmd("run", str(_long_sweep(tmp_path)), "--workers", "2", "--db", db)
    proc = terminal.start([*prefix, *run], _env(tmp_path / "tmp"), tmp_path)
    try:
        tree = _mid_training(proc, log, db, 3, recorded)
    finally:
        terminal.close()
    return proc, tree, log


def test_closing_the_terminal_of_run_stops_everything(
        tmp_path: Path, recorded: list[Proc], sqlite_url: str) -> None:
    # The terminal is gone, not just signalled: writing the goodbye fails (EIO) too.
    proc, tree, log = _run_in_terminal(tmp_path, sqlite_url, recorded, [])
    assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    _assert_all_gone(tree, 0, log)
    assert list((tmp_path / "tmp").glob("hpsweep-redis-*")) == []
    _no_trial_lost(sqlite_url)


def test_nohup_run_outlives_its_terminal(tmp_path: Path, recorded: list[Proc],
                                         sqlite_url: str) -> None:
    proc, tree, log = _run_in_terminal(tmp_path, sqlite_url, recorded, ["nohup"])
    engine = make_engine(sqlite_url, readonly=True)
    try:
        before = scalar(engine, "SELECT COUNT(*) FROM curves")
        assert wait_for(lambda: scalar(engine, "SELECT COUNT(*) FROM curves") > before + 50
                        or proc.poll() is not None, 300), "the sweep stopped progressing"
    finally:
        engine.dispose()
    assert proc.poll() is None and all(p.running() for p in tree), log.read_text()[-3000:]
    proc.terminate()
    assert proc.wait(timeout=120) == 130
    _assert_all_gone(tree, 0, log)
    assert "hpsweep resume" in (tmp_path / "nohup.out").read_text()


# ---------------------------------------------------------------- hpsweep worker --processes


def _launch(tmp_path: Path, config: Path, db: str, redis_url: str) -> str:
    """Launch ``config`` on a queue of its own (no other suite's worker takes its jobs)."""
    queue = _queue()
    out = run_hpsweep("launch", str(config), "--db", db, "--redis", redis_url, "--queue", queue,
                      env=_env(tmp_path))
    assert out.returncode == 0, out.stderr
    return queue


@BOTH_BACKENDS
def test_kill_9_of_a_worker_pool_leaves_no_worker(
        tmp_path: Path, recorded: list[Proc], db: str, redis_url: str) -> None:
    queue = _launch(tmp_path, _long_sweep(tmp_path), db, redis_url)
    proc, log = _start(tmp_path, ["worker", "--processes", "2", "--db", db, "--redis", redis_url,
                                  "--queue", queue, "--log-level", "warning"])
    tree = _mid_training(proc, log, db, 2, recorded)
    assert len(_workers(tree)) == 2, tree
    proc.kill()
    proc.wait()
    _assert_all_gone(tree, DIES_WITHIN, log)
    _no_trial_lost(db)


def test_sighup_of_a_worker_pool_stops_it_like_ctrl_c(
        tmp_path: Path, recorded: list[Proc], sqlite_url: str, redis_url: str) -> None:
    queue = _launch(tmp_path, _long_sweep(tmp_path), sqlite_url, redis_url)
    proc, log = _start(tmp_path, ["worker", "--processes", "2", "--db", sqlite_url, "--redis",
                                  redis_url, "--queue", queue, "--log-level", "warning"])
    tree = _mid_training(proc, log, sqlite_url, 2, recorded)
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]  # Ctrl-C's exit code
    _assert_all_gone(tree, 0, log)
    _no_trial_lost(sqlite_url)


# ---------------------------------------------------------------- hpsweep ensemble --workers


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["kill-9", "sighup"])
def test_ensemble_with_workers_leaves_no_worker(
        tmp_path: Path, recorded: list[Proc], sqlite_url: str, redis_url: str, sig: int) -> None:
    from tests.coordinator_tests.finished_sweep import build

    name = build(sqlite_url, redis_url, tmp_path, stages=[{"trials": 2, "epochs": 1}])
    with make_engine(sqlite_url).begin() as conn:  # seeds retrain the best trial's epochs:
        conn.exec_driver_sql("UPDATE trials SET epochs = 100000")  # make them long
    proc, log = _start(tmp_path, ["ensemble", name, "--method", "seeds", "--k", "2",
                                  "--workers", "2", "--db", sqlite_url, "--redis", redis_url])
    seeds = "WHERE t.stage_id IN (SELECT id FROM stages WHERE kind = 'seeds')"
    tree = _mid_training(proc, log, sqlite_url, 2, recorded, where=seeds)
    assert len(_workers(tree)) == 2, tree
    proc.send_signal(sig)
    if sig == signal.SIGHUP:  # as Ctrl-C: the workers stopped before the command returned
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
        assert "seed trials stay queued" in log.read_text()
        _assert_all_gone(tree, 0, log)
    else:
        proc.wait()
        _assert_all_gone(tree, DIES_WITHIN, log)
    _no_trial_lost(sqlite_url, sweep_status="done")
