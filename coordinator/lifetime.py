"""Children that die with their parent, however it dies (DESIGN principle 8).

Two mechanisms, because each has a gap the other closes:

- ``die_with_parent(sig)``: a ``preexec_fn`` that asks Linux to send ``sig`` to the child
  when its parent dies (``prctl(PR_SET_PDEATHSIG)``), set between fork and exec so it
  holds even for a ``kill -9`` of the parent and for a child that cannot watch anything
  itself (``redis-server``).
- ``watch_parent(pid, grace)``: a thread in a Python child that notices it was orphaned
  (on any OS), asks itself to stop gracefully, and exits hard if that takes too long.

Pitfalls handled here: PDEATHSIG fires when the *thread* that forked the child exits,
not the process, so it is only armed for children spawned by the main thread (a
worker thread's exit would otherwise kill a child whose parent still lives); and a
parent that died before ``prctl`` ran sends nothing, so the child compares its parent
pid with the one recorded before the fork right after arming it.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
# a kill and a closed terminal: both stop cleanly (SIGHUP only where there is one)
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))

log = logging.getLogger("hpsweep.lifetime")


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (Linux only), resolved in the parent so the forked child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    prctl: Callable[..., int] = fn
    return prctl


def die_with_parent(sig: int) -> Callable[[], None] | None:
    """A ``Popen(preexec_fn=...)`` that gets the child ``sig`` when this process dies.

    None where that cannot work: not Linux, or called from a thread other than the main
    one (PDEATHSIG would fire when that thread ends, killing a child whose parent lives).
    """
    prctl = _prctl()
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def arm() -> None:  # runs in the child between fork and exec: no locks, no imports
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


def armed_signal() -> int:
    """The parent-death signal armed for this process (0: none, or not Linux)."""
    prctl = _prctl()
    if prctl is None:
        return 0
    out = ctypes.c_int(0)
    prctl(PR_GET_PDEATHSIG, ctypes.addressof(out), 0, 0, 0)
    return out.value


def handle_stop_signals(handler: Callable[[int, Any], Any]) -> None:
    """Treat SIGTERM and SIGHUP (the terminal closed) like each other: call ``handler``.

    An ignored SIGHUP stays ignored: ``nohup hpsweep run …`` asked to outlive its terminal.
    """
    for sig in STOP_SIGNALS:
        if sig == signal.SIGTERM or signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, handler)


def watch_parent(parent: int, grace: float, poll: float = 0.5) -> threading.Thread:
    """Stop this process gracefully (SIGTERM to itself) once ``parent`` is no longer its
    parent; exit at once if it still runs ``grace`` seconds later.

    ``os.getppid()`` changes when the parent dies (the child is re-parented), so a
    recycled pid cannot fool the check. If PDEATHSIG already delivered SIGTERM, no
    second one is sent: a second SIGTERM means "stop now" to a worker.
    """
    def run() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        log.warning("parent process %d is gone: stopping", parent)
        if armed_signal() != signal.SIGTERM:
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        log.error("still running %.0f s after parent %d died: exiting now", grace, parent)
        _exit_group()

    thread = threading.Thread(target=run, name="parent-watch", daemon=True)
    thread.start()
    return thread


def _exit_group() -> None:
    """Exit now; as a process-group leader, take the group along (RQ's forked work horses)."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(1)


# ---------------------------------------------------------------- who owns a folder


def process_identity(pid: int) -> str | None:
    """``"pid start"`` naming one process across pid reuse, or None if it is not running.

    ``start`` is the kernel's start time (clock ticks since boot, from /proc) where there
    is a /proc, else empty: then only the pid is compared. A zombie counts as gone.
    """
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return None if fields[0] in ("Z", "X") else f"{pid} {fields[19]}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # exists, owned by someone else
    return f"{pid} "


def is_running(identity: str) -> bool:
    """Is the process named by a ``process_identity`` string still the same one, alive?"""
    pid_text, _, start = identity.strip().partition(" ")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    now = process_identity(pid) if pid > 0 else None
    if now is None:
        return False
    return not start or not now.split(" ", 1)[1] or now == f"{pid} {start}"
