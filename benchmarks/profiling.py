"""cProfile inside benchmark worker processes, and a summary of their profiles.

``env(folder, base)`` gives the environment that makes every ``hpsweep worker`` process
(not the pool supervisors) run under cProfile (timing CPU, not wall time) and write
``<pid>.prof`` into ``folder`` when it exits: a ``sitecustomize.py`` in ``folder`` (Python
imports it at start-up when ``folder`` is on ``PYTHONPATH``). Benchmark-only: nothing in
hpsweep knows about it.
"""

from __future__ import annotations

import os
import pstats
from pathlib import Path

SITECUSTOMIZE = """\
import sys
if "worker" in sys.orig_argv and "--processes" not in sys.orig_argv \\
        and "coordinator.child" in sys.orig_argv:
    import atexit, cProfile, os, time
    _profile = cProfile.Profile(time.process_time)  # CPU time, not time blocked on sockets
    _profile.enable()

    def _dump() -> None:
        _profile.disable()
        _profile.dump_stats(os.path.join({folder!r}, f"{{os.getpid()}}.prof"))

    atexit.register(_dump)
"""
# functions whose call counts say what a trial costs (substring of pstats' key)
COUNTED = {"SQL statements": ("execute", ("psycopg/cursor.py", "sqlite3")),
           "Redis commands": ("execute_command", ("redis/client.py",)),
           "Redis pipelines": ("execute", ("redis/client.py",))}


def env(folder: Path, base: dict[str, str]) -> dict[str, str]:
    """``base`` (a worker environment) with ``folder``'s ``sitecustomize.py`` on its path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE.format(folder=str(folder)))
    old = base.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(folder), *([old] if old else [])])}


def summary(folder: Path, top: int = 25) -> None:
    """Print the merged profile of the workers in ``folder``: what a trial calls, and the
    functions taking the most time (own and cumulative)."""
    files = sorted(str(p) for p in folder.glob("*.prof"))
    if not files:
        print(f"  no profiles in {folder} (did the workers exit normally?)")
        return
    stats = pstats.Stats(*files)
    raw = stats.stats  # type: ignore[attr-defined]
    runs = sum(nc for (file, _, name), (_, nc, *_rest) in raw.items()
               if name == "run_trial" and file.endswith("worker/jobs.py"))
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"  {len(files)} worker profiles, {runs} trials run, {total:.1f} s profiled "
          f"({total / max(runs, 1) * 1e3:.1f} ms per trial, under cProfile)")
    for what, (name, files_like) in COUNTED.items():
        n = sum(nc for (file, _, fn), (_, nc, *_rest) in raw.items()
                if fn == name and any(f in file for f in files_like))
        print(f"    {what}: {n / max(runs, 1):.1f} per trial")
    for key in ("cumulative", "tottime"):
        print(f"  top {top} by {key}:")
        stats.sort_stats(key).print_stats(top)
