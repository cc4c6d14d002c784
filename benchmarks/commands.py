"""Whole-command latency of ``hpsweep status`` and ``hpsweep best`` on a big sweep.

    python benchmarks/commands.py [--trials N] [--repeats 5] [--only sqlite]

A finished sweep of N (50,000) trials over three stages is bulk-inserted
(``tests/support/synthetic_sweep.py``) into a fresh SQLite file and a fresh PostgreSQL
database. Each command then runs as a user runs it — a new ``hpsweep`` process, from
start to exit — ``--repeats`` times; the median wall time is compared with the target
(0.25 s on SQLite, 0.35 s on PostgreSQL). ``hpsweep --help`` is timed beside them as
the floor: the interpreter plus the CLI, no database. CPU seconds (user + system of
the child) are printed beside wall time: on a shared machine they move less.

``--engine-path`` also times each command with the plain DB-API reads switched off
(``HPSWEEP_PLAIN_READS=0``: SQLAlchemy as before this change), for a before/after in
one run. PostgreSQL gets ``ANALYZE`` after the bulk insert, as autovacuum does within
a minute of one (without statistics the planner sorts all 50,000 trials for a top-5).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import time

import harness

from storage.db import make_engine
from tests.support.synthetic_sweep import build

TARGET_S = {"sqlite": 0.25, "postgresql": 0.35}
COMMANDS = {"--help": ["--help"], "status": ["status"], "best": ["best", "--top", "5"]}


def command_seconds(args: list[str], repeats: int,
                    env: dict[str, str] | None = None) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds) of each of ``repeats`` runs of ``hpsweep ARGS``."""
    exe = shutil.which("hpsweep") or "hpsweep"
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run([exe, *args], capture_output=True, text=True, check=False,
                              env={**os.environ, **(env or {})})
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if done.returncode != 0:
            raise RuntimeError(f"hpsweep {' '.join(args)} exited {done.returncode}: "
                               f"{done.stderr[-500:]}")
    return walls, cpus


def _analyze(url: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("ANALYZE")


def measure(kind: str, n_trials: int, repeats: int, engine_path: bool) -> list[list[str]]:
    rows = []
    with harness.database(kind) as url:
        engine = make_engine(url)
        t0 = time.perf_counter()
        build(engine, n_trials)
        engine.dispose()
        if kind == "postgresql":
            _analyze(url)
        print(f"{kind}: {n_trials:,} trials built in {time.perf_counter() - t0:.1f} s")
        paths = [("plain", {}), ("engine", {"HPSWEEP_PLAIN_READS": "0"})][:1 + engine_path]
        for name, args in COMMANDS.items():
            for path, env in paths if name != "--help" else paths[:1]:
                walls, cpus = command_seconds(
                    [*args, "--db", url] if name != "--help" else args, repeats, env)
                med = statistics.median(walls)
                target = TARGET_S[kind]
                verdict = "floor" if name == "--help" else (
                    "met" if med <= target else "missed")
                rows.append([kind, name, path if name != "--help" else "", f"{med:.3f}",
                             f"{min(walls):.3f}", f"{max(walls):.3f}",
                             f"{statistics.median(cpus):.3f}", f"{target:g}", verdict])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    ap.add_argument("--engine-path", action="store_true",
                    help="also time the SQLAlchemy path (plain reads off), for comparison")
    args = ap.parse_args()
    print("\n".join(harness.machine_lines()))
    rows: list[list[str]] = []
    for kind in harness.backends(args.only):
        rows += measure(kind, args.trials, args.repeats, args.engine_path)
    print(f"load average at the end: {harness.load_average()}")
    print(harness.table(["backend", "command", "path", "median s", "min s", "max s",
                             "CPU s", "target s", "verdict"], rows))


if __name__ == "__main__":
    main()
