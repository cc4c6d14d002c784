"""Many worker processes on one PostgreSQL, directly and through PgBouncer.

    python benchmarks/scale_workers.py [--rounds 10] [--workers 48] [--bouncer-workers 150]
                                       [--only direct|pgbouncer]

For each mode, a fresh PostgreSQL database, a leased database of the local Redis and
``hpsweep worker --processes 16`` pools (``--workers`` processes in all) that live for
all the rounds; each round launches (``hpsweep launch``) a 2-stage sweep of one-epoch
spiral trials (``--trials`` + ``--second``) and waits for it to end. A round passes
when the sweep ends ``done``, every trial is ``done`` or ``diverged`` with its curve
rows 1..epochs exactly once, and the workers logged no connection error (nor a
traceback). ``pgbouncer`` mode starts a private PgBouncer in transaction mode
(``tests/support/pgbouncer.py``, ``--server-pool`` server connections) and gives the workers
``?pgbouncer=1`` URLs; the peak number of server connections to the database is
reported for both modes. Exit 1 when any round fails. The acceptance is ten rounds
of both: ``python benchmarks/scale_workers.py --rounds 10``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import harness
from redis import Redis
from rq import Worker
from sqlalchemy import Engine, text

from storage.db import make_engine
from tests.support.db import sweep_status, wait_for
from tests.support.pg_activity import ConnectionSampler
from tests.support.pgbouncer import CONNECTION_ERRORS, PgBouncer, pgbouncer_binary
from tests.support.processes import WorkerProc, run_hpsweep, start_worker, stop_all, worker_env
from worker import queue as q

PER_POOL = 16
OTHER_ERRORS = re.compile(r"Traceback|ERROR|deadlock detected|could not serialize", re.I)
SWEEP_YAML = """\
name: {name}
dataset: spiral
seed: {seed}
train: {{depth: 1, batch_size: 32, update_rule: adam}}
space:
  learning_rate: {{dist: log_uniform, low: 1.0e-4, high: 1.0}}
  hidden_size: {{dist: int_log_uniform, low: 8, high: 64}}
stages:
  - {{trials: {first}, epochs: 1}}
  - {{trials: {second}, epochs: 1}}
"""


@dataclass(frozen=True)
class Round:
    mode: str
    index: int
    workers: int
    status: str
    trials: int
    curve_rows: int
    wall: float
    problems: tuple[str, ...]
    log_errors: tuple[str, ...]  # the worker log lines that name a connection error
    other_errors: tuple[str, ...]  # other errors the workers logged (deadlocks, tracebacks)

    @property
    def ok(self) -> bool:
        return (self.status == "done" and not self.problems and not self.log_errors
                and not self.other_errors)


class Pools:
    """``hpsweep worker --processes 16`` pools, ``n`` worker processes in all, each pool
    logging to its own file."""

    def __init__(self, n: int, db_url: str, redis_url: str, queue: str, folder: Path) -> None:
        self.n, self.queue, self.folder = n, queue, folder
        self.env = worker_env(db_url, redis_url, folder / "cache")
        self.procs: list[WorkerProc] = []

    def start(self, conn: Redis, timeout: float = 600) -> None:
        full, rest = divmod(self.n, PER_POOL)
        sizes = [PER_POOL] * full + ([rest] if rest else [])
        for i, size in enumerate(sizes):
            self.procs.append(start_worker(
                ["--processes", str(size), "--queue", self.queue, "--log-level", "warning"],
                log=self.folder / f"pool-{i}.log", env=self.env))
        queue = q.make_queue(conn, self.queue)
        if not wait_for(lambda: Worker.count(connection=conn, queue=queue) >= self.n
                        or not all(p.alive() for p in self.procs), timeout, interval=0.2) \
                or not all(p.alive() for p in self.procs):
            raise RuntimeError(f"{self.n} workers did not start: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        return "".join(p.text() for p in self.procs)

    def stop(self) -> None:
        stop_all(self.procs, timeout=120)


def launch(folder: Path, name: str, args: argparse.Namespace, db_url: str, redis_url: str,
           queue: str) -> None:
    config = folder / f"{name}.yaml"
    config.write_text(SWEEP_YAML.format(name=name, seed=hash(name) % 1000, first=args.trials,
                                        second=args.second))
    out = run_hpsweep("launch", str(config), "--db", db_url, "--redis", redis_url, "--queue",
                      queue, timeout=300)
    out.check_returncode()


def wait_for_end(engine: Engine, name: str, timeout: float) -> str:
    """The sweep's status once it leaves 'running' (or 'running' after ``timeout``, e.g. a
    sweep whose stages are all done but which was never finished)."""
    wait_for(lambda: sweep_status(engine, name) != "running", timeout, interval=0.2)
    return str(sweep_status(engine, name))


def sweep_problems(engine: Engine, name: str) -> tuple[int, int, list[str]]:
    """(trials, curve rows, problems): unfinished trials, missing or duplicate curve rows,
    stages not done."""
    with engine.connect() as c:
        trials = c.execute(text(
            "SELECT t.id, t.status, t.epochs, count(c.epoch), count(DISTINCT c.epoch), "
            "min(c.epoch), max(c.epoch) FROM trials t JOIN sweeps s ON s.id = t.sweep_id "
            "LEFT JOIN curves c ON c.trial_id = t.id WHERE s.name = :n GROUP BY t.id"),
            {"n": name}).all()
        stages = c.execute(text(
            "SELECT st.idx, st.status FROM stages st JOIN sweeps s ON s.id = st.sweep_id "
            "WHERE s.name = :n ORDER BY st.idx"), {"n": name}).all()
    problems = [f"stage {idx} {status}" for idx, status in stages if status != "done"]
    for tid, status, epochs, rows, distinct, low, high in trials:
        if status not in ("done", "diverged"):
            problems.append(f"trial {tid} {status}")
        elif rows != distinct:
            problems.append(f"trial {tid}: duplicate curve rows")
        elif status == "done" and (rows, low, high) != (epochs, 1, epochs):
            problems.append(f"trial {tid}: curve rows {rows} for {epochs} epoch(s)")
    return len(trials), sum(t[3] for t in trials), problems


@contextlib.contextmanager
def served_database(mode: str, folder: Path, server_pool: int) -> Iterator[tuple[str, str]]:
    """(URL the workers use, database name): direct, or through a private PgBouncer."""
    with harness.postgres_db("hpsweep_bench") as direct:
        dbname, user = direct.rsplit("/", 1)[1], direct.split("//")[1].split("@")[0]
        if mode == "direct":
            yield direct, dbname
            return
        with PgBouncer(folder / "pgbouncer", users=[user], pool_size=server_pool,
                       max_clients=4000) as bouncer:
            yield bouncer.url(user, dbname), dbname


def run_mode(mode: str, workers: int, args: argparse.Namespace) -> list[Round]:
    results: list[Round] = []
    with (tempfile.TemporaryDirectory(prefix=f"hpsweep-scale-{mode}-") as tmp,
          served_database(mode, Path(tmp), args.server_pool) as (db_url, dbname),
          harness.leased_redis() as redis_url,
          ConnectionSampler("datname = %s", (dbname,), interval=0.02) as peak):
        folder, conn = Path(tmp), Redis.from_url(redis_url)
        engine = make_engine(db_url)
        queue = f"scale-{uuid.uuid4().hex[:8]}"
        pools = Pools(workers, db_url, redis_url, queue, folder)
        started = time.perf_counter()
        try:
            pools.start(conn)
            print(f"{mode}: {workers} workers serving after {time.perf_counter() - started:.0f} s",
                  flush=True)
            for i in range(1, args.rounds + 1):
                results.append(one_round(mode, i, workers, engine, pools, args, db_url,
                                         redis_url))
                print(f"  {fmt_round(results[-1])}\n    server connections so far: peak "
                      f"{peak.peak}, mean {peak.mean:.1f}", flush=True)
        finally:
            pools.stop()
            engine.dispose()
            conn.close()
    return results


def one_round(mode: str, index: int, workers: int, engine: Engine, pools: Pools,
              args: argparse.Namespace, db_url: str, redis_url: str) -> Round:
    name = f"scale-{mode}-{index}-{uuid.uuid4().hex[:6]}"
    seen = len(pools.log_text())
    started = time.perf_counter()
    launch(pools.folder, name, args, db_url, redis_url, pools.queue)
    status = wait_for_end(engine, name, args.timeout)
    wall = time.perf_counter() - started
    trials, curve_rows, problems = sweep_problems(engine, name)
    lines = pools.log_text()[seen:].splitlines()
    errors = tuple(line for line in lines if CONNECTION_ERRORS.search(line))
    others = tuple(line for line in lines
                   if OTHER_ERRORS.search(line) and not CONNECTION_ERRORS.search(line))
    return Round(mode, index, workers, status, trials, curve_rows, wall, tuple(problems),
                 errors, others)


def fmt_round(r: Round) -> str:
    verdict = "ok" if r.ok else "FAILED"
    extra = f"\n    problems: {', '.join(r.problems[:5])}" if r.problems else ""
    extra += "".join(f"\n    log: {line[:200]}" for line in
                     (*r.log_errors[:3], *sorted(set(r.other_errors))[:3]))
    return (f"{r.mode} round {r.index}: {r.workers} workers, sweep {r.status}, {r.trials} trials, "
            f"{r.curve_rows} curve rows, {r.wall:.1f} s; worker logs: {len(r.log_errors)} "
            f"connection errors, {len(r.other_errors)} other errors -> {verdict}{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="sweeps in a row per mode (10 for "
                    "the acceptance)")
    ap.add_argument("--workers", type=int, default=48, help="worker processes, direct mode")
    ap.add_argument("--bouncer-workers", type=int, default=150,
                    help="worker processes, pgbouncer mode")
    ap.add_argument("--trials", type=int, default=400, help="trials of stage 0")
    ap.add_argument("--second", type=int, default=40, help="trials of stage 1")
    ap.add_argument("--server-pool", type=int, default=20,
                    help="PgBouncer's server connections for the database")
    ap.add_argument("--timeout", type=float, default=900, help="seconds a round may take")
    ap.add_argument("--only", choices=["direct", "pgbouncer"])
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the workers on the way out
    if not harness.postgres_answers():
        sys.exit("no PostgreSQL server at 127.0.0.1:5432")
    modes = [m for m in ("direct", "pgbouncer") if args.only in (None, m)]
    if "pgbouncer" in modes and pgbouncer_binary() is None:
        sys.exit("pgbouncer is not installed (apt-get install pgbouncer)")
    print("\n".join(harness.machine_lines()), flush=True)
    results = []
    for mode in modes:
        results += run_mode(mode, args.workers if mode == "direct" else args.bouncer_workers,
                            args)
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} rounds passed; {harness.load_average()}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
