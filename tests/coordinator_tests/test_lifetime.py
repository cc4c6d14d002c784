"""The pieces that make children die with their parent (DESIGN principle 8), on real
processes: the parent-death signal and its race, the orphan watch, stale embedded-Redis
folders. The whole commands are killed in tests/faults/test_orphans.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from coordinator import lifetime
from coordinator.embedded import EmbeddedRedis, remove_stale_folders
from tests.support.db import wait_for
from tests.support.processes import ROOT

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie nobody has reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


# ---------------------------------------------------------------- parent-death signal


@linux_only
def test_a_child_whose_parent_died_before_prctl_kills_itself(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The race: the parent dies between fork and prctl, so no signal would ever come.
    # Seen from the child, that is a parent pid other than the one recorded before fork.
    monkeypatch.setattr(lifetime.os, "getpid", lambda: 1)  # "the parent was pid 1"
    arm = lifetime.die_with_parent(signal.SIGTERM)
    monkeypatch.undo()
    assert arm is not None
    proc = subprocess.Popen(["sleep", "30"], preexec_fn=arm)
    assert proc.wait(timeout=30) == -signal.SIGKILL


@linux_only
def test_the_signal_is_armed_in_the_child_and_only_from_the_main_thread() -> None:
    arm = lifetime.die_with_parent(signal.SIGTERM)
    assert arm is not None
    code = "from coordinator.lifetime import armed_signal; print(armed_signal())"
    out = subprocess.run([sys.executable, "-c", code], preexec_fn=arm, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == str(int(signal.SIGTERM)), out.stderr

    # PDEATHSIG fires when the forking *thread* ends: never armed from another thread
    seen: list[object] = []
    t = threading.Thread(target=lambda: seen.append(lifetime.die_with_parent(signal.SIGTERM)))
    t.start()
    t.join()
    assert seen == [None]


def test_an_orphan_that_ignores_sigterm_exits_after_the_grace(tmp_path: Path) -> None:
    # No PDEATHSIG here (the middle process arms none): only the watch thread can notice.
    # The child ignores the graceful SIGTERM it sends itself, so the grace must end it.
    ready = tmp_path / "ready"
    code = ("import os, signal, time\n"
            "from coordinator.lifetime import watch_parent\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "watch_parent(os.getppid(), grace=1.0, poll=0.05)\n"
            f"open({str(ready)!r}, 'w').close()\n"
            "time.sleep(120)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    pid_file = tmp_path / "child.pid"
    middle = (f"import subprocess, sys, os, time; p = subprocess.Popen([sys.executable, '-c', "
              f"{code!r}]); open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
              f"while not os.path.exists({str(ready)!r}): time.sleep(0.02)")
    subprocess.run([sys.executable, "-c", middle], cwd=ROOT, env=env, timeout=60, check=True)
    child = int(pid_file.read_text())
    try:
        assert wait_for(lambda: _gone(child), 30), "the orphan kept running past its grace"
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_the_child_entry_refuses_to_start_once_orphaned() -> None:
    # coordinator.child is told its parent's pid; a process started by someone else (or
    # re-parented before Python got going) stops at once instead of serving for ever.
    not_the_parent = str(2**22 + 1)  # above any pid_max: surely not this test's pid
    out = subprocess.run([sys.executable, "-m", "coordinator.child", not_the_parent, "60",
                          "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Usage" not in out.stdout


def test_stop_signals_are_handled_but_nohup_is_respected() -> None:
    def handler(*_: object) -> None:
        pass

    saved = {sig: signal.getsignal(sig) for sig in lifetime.STOP_SIGNALS}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        lifetime.handle_stop_signals(handler)
        assert signal.getsignal(signal.SIGHUP) is handler
        assert signal.getsignal(signal.SIGTERM) is handler

        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup` starts a command
        lifetime.handle_stop_signals(handler)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------- stale folders


def _folder(tmp: Path, name: str, owner: str | None, age: float = 0.0) -> Path:
    folder = tmp / f"hpsweep-redis-{name}"
    folder.mkdir()
    if owner is not None:
        (folder / "owner").write_text(owner)
    if age:
        then = time.time() - age
        os.utime(folder, (then, then))
    return folder


def _dead_identity() -> str:
    proc = subprocess.Popen(["sleep", "30"])
    ident = lifetime.process_identity(proc.pid)
    proc.kill()
    proc.wait()
    assert ident is not None
    return ident


def test_folders_of_dead_owners_go_and_of_live_owners_stay(tmp_path: Path) -> None:
    me = lifetime.process_identity(os.getpid())
    assert me is not None
    pid, start = me.split(" ")
    live = _folder(tmp_path, "live", me, age=3600)
    dead = _folder(tmp_path, "dead", _dead_identity())
    reused = _folder(tmp_path, "reused", f"{pid} {int(start or 0) + 1}")  # same pid, later start
    garbled = _folder(tmp_path, "garbled", "not a pid")
    young = _folder(tmp_path, "young", None)  # being created right now: no owner file yet
    old = _folder(tmp_path, "old", None, age=3600)  # an older hpsweep's leftover
    other = tmp_path / "hpsweep-redis-file"
    other.write_text("not a folder")
    removed = remove_stale_folders(tmp_path)
    assert sorted(removed) == sorted([dead, reused, garbled, old])
    assert live.is_dir() and young.is_dir() and other.is_file()
    assert not dead.exists() and not reused.exists() and not old.exists()


def test_an_old_ownerless_folder_whose_server_answers_stays(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "serving", None)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(folder / "redis.sock"))
        server.listen()
        then = time.time() - 3600
        os.utime(folder, (then, then))
        assert remove_stale_folders(tmp_path) == []
    assert folder.is_dir()


def test_an_embedded_redis_clears_stale_folders_and_records_its_owner(tmp_path,  # type: ignore[no-untyped-def]
                                                                      monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = _folder(tmp_path, "stale", _dead_identity())
    server = EmbeddedRedis()
    url = server.start()
    try:
        assert not stale.exists()
        folder = Path(url.removeprefix("unix://").split("?")[0]).parent
        assert folder.parent == tmp_path
        assert (folder / "owner").read_text() == lifetime.process_identity(os.getpid())
        assert remove_stale_folders(tmp_path) == []  # its own folder is not stale
    finally:
        server.stop()
    assert list(tmp_path.glob("hpsweep-redis-*")) == []
