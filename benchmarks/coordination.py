"""Coordination capacity: trials that do no work, on 2 to 128 worker processes.

    python benchmarks/coordination.py [--points sqlite:2,postgresql:32,pgbouncer:128,...]
                                      [--trials N] [--profile DIR]

Each point (``backend:workers``; backends ``sqlite``, ``postgresql`` (direct) and
``pgbouncer`` (PostgreSQL through a private PgBouncer in transaction mode, 20 server
connections)) starts a fresh database, a private ``redis-server`` on a loopback port and
``hpsweep worker --processes 16`` pools, runs a warm-up sweep (2 trials per worker:
imports, dataset cache, connections), then a one-stage sweep of max(3000, 20 x workers)
one-epoch trials of ``zero``, a model that trains in ~0 ms (``benchmarks/zero_model.py``,
registered for these processes only, as the tests register plug-ins), on ``spiral``.
Between the moments 10 % and 90 % of the trials are final (steady state):

    trials per second
    CPU ms per trial = CPU time used by the worker processes (pool supervisors included)
                       + the PostgreSQL server processes of the run's database (its
                       backends, plus the shared checkpointer, background writer and WAL
                       writer; nothing for SQLite, which runs inside the workers)
                       + PgBouncer + the Redis server, all / trials finished in between

read from ``/proc/<pid>/stat`` (Redis's pid from ``INFO server``). Over the whole sweep
(enqueue included), once the server's statistics settle: transactions per trial
(``pg_stat_database``) and Redis commands per trial (``INFO commandstats``). The goal:
CPU per trial at 128 workers <= 1.5x the figure at 2 (PostgreSQL). On a 2-core machine,
throughput is bounded by the cores long before 128 workers: the rate shows the cores'
capacity; CPU per trial shows what coordination costs per trial as workers are added.
``--profile DIR`` runs each point with every worker under cProfile (slower: its CPU
figures are not the measurement) and prints where the workers' time goes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import harness
import pools
import profiling
import psycopg
from redis import Redis
from sqlalchemy import text
from zero_model import DIST, ENTRY_POINT

from coordinator.launch import create_sweep, enqueue_stage, prepare_dataset
from storage.db import make_engine
from tests.support import plugins

DEFAULT_POINTS = ("sqlite:2,sqlite:8,postgresql:2,postgresql:8,postgresql:32,pgbouncer:2,"
                  "pgbouncer:128")
GOAL = 1.5
MB_PER_WORKER = 130  # resident memory a worker process may take (80-100 MB measured)
SERVER_POOL = 20
FINAL = "('done', 'pruned', 'diverged', 'failed', 'cancelled')"
PG_AUX = ("checkpointer", "background writer", "walwriter")
PARTS = ("workers", "postgres", "pgbouncer", "redis")


def zero_config(name: str, trials: int) -> harness.SweepConfig:
    return harness.config(name, "spiral", model="zero",
                          space={"learning_rate": {"dist": "log_uniform", "low": 1e-3,
                                                   "high": 1e-1}},
                          stages=[{"trials": trials, "epochs": 1}],
                          train={"batch_size": 256, "update_rule": "sgd"})


@dataclass(frozen=True)
class Reading:
    t: float
    finished: int
    cpu: dict[str, dict[int, float]]  # part -> pid -> CPU seconds


@dataclass(frozen=True)
class Point:
    backend: str
    workers: int
    trials: int
    window: int  # trials finished inside the steady-state window
    seconds: float
    cpu_ms: dict[str, float]  # part -> CPU ms per trial
    xacts: float | None  # database transactions per trial (PostgreSQL)
    redis_calls: float  # Redis commands per trial
    top_redis: list[tuple[str, float]]
    load: str

    @property
    def total_ms(self) -> float:
        return sum(self.cpu_ms.values())

    @property
    def rate(self) -> float:
        return self.window / self.seconds


class Probe:
    """Reads one point's counters: finished trials, each part's CPU time, database
    transactions and Redis commands."""

    def __init__(self, backend: str, db_url: str, dbname: str | None, bouncer_pid: int | None,
                 workers: pools.Pools, redis: Redis) -> None:
        self.backend, self.dbname, self.workers, self.redis = backend, dbname, workers, redis
        self.bouncer_pid = bouncer_pid
        self.redis_pid = int(redis.info("server")["process_id"])
        self.queries = 0  # statements this probe ran on the run's database
        self.own_pid = None
        if backend == "sqlite":  # a connection per poll: each sees the latest commit
            self.engine = make_engine(db_url, readonly=True)
        else:
            self.pg = psycopg.connect(db_url.replace("+psycopg", ""), autocommit=True)
            self.own_pid = self.pg.execute("SELECT pg_backend_pid()").fetchone()[0]
            self.queries += 1
            self.admin, _ = harness.pg_admin()

    def finished(self, sweep_id: int) -> int:
        sql = f"SELECT count(*) FROM trials WHERE sweep_id = {int(sweep_id)} AND status IN {FINAL}"
        if self.backend == "sqlite":
            with self.engine.connect() as c:
                return int(c.execute(text(sql)).scalar_one())
        self.queries += 1
        return int(self.pg.execute(sql).fetchone()[0])

    def postgres_pids(self) -> list[int]:
        if self.backend == "sqlite":
            return []
        rows = self.admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE (datname = %s AND pid <> %s) "
            "OR backend_type = ANY(%s)", (self.dbname, self.own_pid, list(PG_AUX))).fetchall()
        return [r[0] for r in rows]

    def read(self, sweep_id: int) -> Reading:
        cpu = {"workers": pools.cpu_seconds(self.workers.pids()),
               "postgres": pools.cpu_seconds(self.postgres_pids()),
               "pgbouncer": pools.cpu_seconds([self.bouncer_pid] if self.bouncer_pid else []),
               "redis": pools.cpu_seconds([self.redis_pid])}
        return Reading(time.perf_counter(), self.finished(sweep_id), cpu)

    def xacts(self) -> int | None:
        """Committed + rolled-back transactions of the run's database so far, less the
        probe's own; waits until the server's statistics stop moving (backends report
        theirs up to seconds after going idle)."""
        if self.backend == "sqlite":
            return None
        sql = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s"
        last, deadline = None, time.monotonic() + 20
        while time.monotonic() < deadline:
            (n,), = self.admin.execute(sql, (self.dbname,)).fetchall()
            if n == last:
                break
            last = n
            time.sleep(2)
        return int(last) - self.queries

    def redis_calls(self) -> dict[str, int]:
        return {k.removeprefix("cmdstat_"): v["calls"]
                for k, v in self.redis.info("commandstats").items()}

    def close(self) -> None:
        if self.backend == "sqlite":
            self.engine.dispose()
        else:
            self.pg.close()
            self.admin.close()


def run_point(backend: str, workers: int, trials: int, profile: Path | None) -> Point:
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hpsweep-coord-")))
        if backend == "sqlite":
            db_url = direct = stack.enter_context(harness.sqlite_db())
            dbname, bouncer = None, None
        else:
            mode = "direct" if backend == "postgresql" else "pgbouncer"
            served = stack.enter_context(pools.served_database(mode, folder, SERVER_POOL))
            db_url, direct, dbname, bouncer = served.url, served.direct, served.dbname, \
                served.bouncer
        redis_url = stack.enter_context(pools.private_redis())
        engine = make_engine(direct)  # creates the schema before any worker starts
        stack.callback(engine.dispose)
        conn = Redis.from_url(redis_url)
        stack.callback(conn.close)
        queue = f"coord-{uuid.uuid4().hex[:8]}"
        fleet = pools.Pools(workers, db_url, redis_url, queue, folder)
        if profile is not None:
            fleet.env.update(profiling.env(profile / f"{backend}-{workers}", fleet.env))
        stack.callback(fleet.stop)
        t0 = time.perf_counter()
        fleet.start(conn)
        print(f"  {backend}:{workers}: workers serving after {time.perf_counter() - t0:.0f} s",
              flush=True)
        probe = Probe(backend, direct, dbname, bouncer.proc.pid if bouncer and bouncer.proc
                      else None, fleet, conn)
        stack.callback(probe.close)
        warm = launch(engine, conn, queue, zero_config("warm-up", 2 * workers))
        wait_until(lambda: probe.finished(warm) >= 2 * workers, 900)
        return measure(engine, conn, queue, probe, backend, workers, trials)


def launch(engine, conn: Redis, queue: str, cfg: harness.SweepConfig) -> int:  # type: ignore[no-untyped-def]
    made = create_sweep(engine, cfg, queue, prepare_dataset(cfg))
    enqueue_stage(engine, conn, queue, made.stage_id, made.n_trials)
    return made.sweep_id


def wait_until(done, timeout: float, poll: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done within {timeout:.0f} s")
        time.sleep(poll)


def measure(engine, conn: Redis, queue: str, probe: Probe, backend: str,  # type: ignore[no-untyped-def]
            workers: int, trials: int) -> Point:
    xacts0, calls0 = probe.xacts(), probe.redis_calls()
    sweep = launch(engine, conn, queue, zero_config("zero", trials))
    lo, hi = trials // 10, trials - trials // 10
    readings: list[Reading] = []
    deadline = time.monotonic() + 3600
    while len(readings) < 2:
        if probe.finished(sweep) >= (lo, hi)[len(readings)]:
            readings.append(probe.read(sweep))
        elif time.monotonic() > deadline:
            raise RuntimeError(f"{backend}:{workers}: sweep not done within an hour")
        else:
            time.sleep(0.1)
    wait_until(lambda: probe.finished(sweep) >= trials, 900)
    load = harness.load_average()
    a, b = readings
    n = b.finished - a.finished
    cpu_ms = {p: pools.cpu_delta(a.cpu[p], b.cpu[p]) / n * 1e3 for p in PARTS}
    xacts1, calls1 = probe.xacts(), probe.redis_calls()
    calls = {k: (v - calls0.get(k, 0)) / trials for k, v in calls1.items()}
    calls.pop("info", None)  # the probe's own
    top = sorted(((k, v) for k, v in calls.items() if v > 0), key=lambda kv: -kv[1])[:6]
    return Point(backend, workers, trials, n, b.t - a.t, cpu_ms,
                 None if xacts0 is None else (xacts1 - xacts0) / trials,
                 sum(calls.values()), top, load)


def check_memory(workers: int) -> str | None:
    """Why ``workers`` processes may not fit in memory now, or None."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            avail = int(line.split()[1]) // 1024
            need = workers * MB_PER_WORKER + 1024
            return None if avail >= need else f"{avail} MB available, {need} MB needed"
    return None


def report(points: list[Point]) -> None:
    rows = [[p.backend, str(p.workers), str(p.trials), f"{p.rate:.1f}",
             f"{p.total_ms:.1f}", *(f"{p.cpu_ms[k]:.1f}" for k in PARTS),
             "-" if p.xacts is None else f"{p.xacts:.2f}", f"{p.redis_calls:.1f}", p.load]
            for p in points]
    print(harness.table(["backend", "workers", "trials", "trials/s", "CPU ms/trial",
                             *(f"{k} ms" for k in PARTS), "xacts/trial", "redis cmds/trial",
                             "load at the end"], rows))
    for p in points:
        top = ", ".join(f"{k} {v:.1f}" for k, v in p.top_redis)
        print(f"  {p.backend}:{p.workers} Redis commands per trial: {top}")
    print("\nThe machine has 2 cores: trials/s at 32 and 128 workers is the cores' capacity "
          "(shared with whatever else runs: see the load averages), not a limit of "
          "PostgreSQL or Redis; CPU ms/trial is the cost per trial however many share them.")
    base = next((p for p in points if p.backend == "postgresql" and p.workers == 2), None)
    big = max((p for p in points if p.backend != "sqlite"), key=lambda p: p.workers,
              default=None)
    if base is None or big is None or big is base:
        return
    ratio = big.total_ms / base.total_ms
    verdict = ("MET" if ratio <= GOAL else "MISSED") if big.workers >= 128 else \
        "(goal is at 128 workers: not measured in this run)"
    print(f"\ngoal: CPU per trial at 128 workers <= {GOAL}x the 2-worker figure (PostgreSQL): "
          f"{big.backend}:{big.workers} {big.total_ms:.1f} ms vs {base.total_ms:.1f} ms = "
          f"{ratio:.2f}x {verdict}")
    same = next((p for p in points if p.backend == big.backend and p.workers == 2), None)
    if same is not None and same is not base:  # PgBouncer at both ends: workers alone vary
        print(f"  like for like, {big.backend}:2 {same.total_ms:.1f} ms: "
              f"{big.total_ms / same.total_ms:.2f}x (transaction pooling costs the same at "
              "any fleet size: no server-side prepared statements, PgBouncer's own CPU)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", default=DEFAULT_POINTS,
                    help="comma-separated backend:workers (backend sqlite, postgresql or "
                         f"pgbouncer); default {DEFAULT_POINTS}")
    ap.add_argument("--trials", type=int, default=None,
                    help="trials per measured sweep (default max(3000, 20 x workers))")
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR",
                    help="run the workers under cProfile, write their profiles to DIR and "
                         "print a summary (the CPU figures are then not the measurement)")
    args = ap.parse_args()
    points = [(b, int(n)) for b, n in (s.split(":") for s in args.points.split(","))]
    if any(b != "sqlite" for b, _ in points) and not harness.postgres_answers():
        sys.exit("no PostgreSQL server at 127.0.0.1:5432")
    with tempfile.TemporaryDirectory(prefix="hpsweep-zero-model-") as reg:
        plugins.activate([plugins.write_dist_info(Path(reg), DIST, "0.0.1",
                                                  {"hpsweep.models": ENTRY_POINT}),
                          harness.ROOT / "benchmarks"])
        print("\n".join(harness.machine_lines()), flush=True)
        print(f"{harness.load_average()} at the start", flush=True)
        results = []
        for backend, workers in points:
            if (why := check_memory(workers)) is not None:
                print(f"  {backend}:{workers}: skipped, {why}")
                continue
            trials = args.trials or max(3000, 20 * workers)
            results.append(run_point(backend, workers, trials, args.profile))
            print(f"  {backend}:{workers}: {results[-1].rate:.1f} trials/s, "
                  f"{results[-1].total_ms:.1f} CPU ms per trial", flush=True)
            if args.profile is not None:
                profiling.summary(args.profile / f"{backend}-{workers}")
        print()
        report(results)


if __name__ == "__main__":
    main()
