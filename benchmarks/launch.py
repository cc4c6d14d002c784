"""A million-trial launch: its time, its peak memory, and how soon workers can start.

    python benchmarks/launch.py [--trials 1000000] [--only sqlite|postgresql]

Issue 16 target 4: 1,000,000 trials in one stage launched in <= 60 s on SQLite with a
peak memory <= 300 MB (PostgreSQL's figure printed beside it), the first jobs in Redis
within 2 s of the start, so workers begin before the launch ends.

For each backend a fresh process (spawned, so its peak RSS is its own) loads the
config and the dataset, then runs ``coordinator.launch.launch`` (the whole of
``hpsweep launch`` after its checks) into a new database (a temporary SQLite file, or a
PostgreSQL database created for the run) and a leased database number of the local
Redis. This process watches that Redis from outside and records when the first job
appears. Afterwards it checks the result: every trial written, stage 0 ``running``,
Redis holding the first ``ENQUEUE_WINDOW`` jobs. Peak RSS is the launching process's
own ``ru_maxrss`` at its end, imports and dataset included.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time

import harness

ROOT = harness.ROOT

CONFIG = {
    "name": "launch", "dataset": "spiral", "seed": 0,
    "train": {"depth": 1, "hidden_size": 8, "batch_size": 64, "update_rule": "sgd"},
    "space": {"learning_rate": {"dist": "log_uniform", "low": 1e-3, "high": 1.0},
              "reg": {"dist": "log_uniform", "low": 1e-6, "high": 1e-2}},
}
TARGET_SECONDS, TARGET_MB, TARGET_FIRST = 60.0, 300.0, 2.0
QUEUE = "launch-bench"


def child(trials: int, db_url: str, redis_url: str) -> None:
    """In the spawned process: prepare, print the start time, launch, print the end."""
    from redis import Redis

    from coordinator.config import parse_config
    from coordinator.launch import launch, prepare_dataset
    from storage.db import make_engine

    cfg = parse_config({**CONFIG, "stages": [{"trials": trials, "epochs": 1}]},
                       max_trials=None)
    dataset = prepare_dataset(cfg)
    engine, conn = make_engine(db_url), Redis.from_url(redis_url)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"start": time.time(), "rss_before": before}), flush=True)
    cpu = time.process_time()
    made = launch(engine, conn, cfg, QUEUE, dataset)
    end = time.time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    print(json.dumps({"end": end, "enqueued": made.enqueued, "stage_id": made.stage_id,
                      "peak": peak, "cpu": time.process_time() - cpu}), flush=True)


def watch_first_job(redis_url: str, seen: dict[str, float], stop: threading.Event) -> None:
    from redis import Redis

    conn = Redis.from_url(redis_url)
    while not stop.is_set():
        if conn.llen(f"rq:queue:{QUEUE}"):
            seen["first"] = time.time()
            return
        time.sleep(0.005)


def measure(kind: str, trials: int) -> dict[str, float]:
    with harness.database(kind) as db_url, harness.leased_redis() as redis_url:
        seen: dict[str, float] = {}
        stop = threading.Event()
        watcher = threading.Thread(target=watch_first_job, args=(redis_url, seen, stop))
        watcher.start()
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(trials), "--db",
                                 db_url, "--redis", redis_url], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        lines = [json.loads(line) for line in proc.stdout or []]
        if proc.wait() != 0:
            raise RuntimeError(f"the launch process failed (exit {proc.returncode})")
        stop.set()
        watcher.join()
        start, end = lines[0], lines[1]
        checks = check(db_url, redis_url, end["stage_id"], trials)
    return {"seconds": end["end"] - start["start"], "cpu": end["cpu"], "peak_mb": end["peak"],
            "growth_mb": end["peak"] - start["rss_before"],
            "first_job": seen.get("first", float("inf")) - start["start"], **checks}


def check(db_url: str, redis_url: str, stage_id: int, trials: int) -> dict[str, float]:
    """What the launch left: trials and params written, stage status, jobs in Redis."""
    from redis import Redis
    from sqlalchemy import text

    from storage.db import make_engine
    from worker.defaults import ENQUEUE_WINDOW

    engine = make_engine(db_url, readonly=True)
    with engine.connect() as c:
        n = c.execute(text("SELECT COUNT(*) FROM trials WHERE stage_id = :s"),
                      {"s": stage_id}).scalar_one()
        status = c.execute(text("SELECT status FROM stages WHERE id = :s"),
                           {"s": stage_id}).scalar_one()
    engine.dispose()
    jobs = Redis.from_url(redis_url).llen(f"rq:queue:{QUEUE}")
    ok = n == trials and status == "running" and jobs == min(trials, ENQUEUE_WINDOW)
    if not ok:
        print(f"  CHECK FAILED: {n} trials, stage {status}, {jobs} jobs in Redis",
              file=sys.stderr)
    return {"trials": n, "jobs": jobs, "ok": float(ok)}


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--db", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--redis", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.db, args.redis)
        return
    print("\n".join(harness.machine_lines()))
    print(harness.load_average())
    print(f"launch of {args.trials:,} one-epoch spiral trials (2 sampled + 4 fixed params "
          "each), one stage")
    for kind in harness.backends(args.only):
        got = measure(kind, args.trials)
        print(f"{kind}: {got['seconds']:.1f} s (CPU of the launching process "
              f"{got['cpu']:.1f} s; {got['trials']:,} trials, "
              f"{got['jobs']:,} jobs in Redis), peak RSS {got['peak_mb']:.0f} MB "
              f"(+{got['growth_mb']:.0f} MB during the launch), first job in Redis after "
              f"{got['first_job']:.2f} s")
        if kind == "sqlite":
            print(f"  time {got['seconds']:.1f} s vs target {TARGET_SECONDS:.0f} s: "
                  f"{verdict(got['seconds'], TARGET_SECONDS)}; peak {got['peak_mb']:.0f} MB "
                  f"vs {TARGET_MB:.0f} MB: {verdict(got['peak_mb'], TARGET_MB)}; first job "
                  f"{got['first_job']:.2f} s vs {TARGET_FIRST:.0f} s: "
                  f"{verdict(got['first_job'], TARGET_FIRST)}")
        else:
            print(f"  first job {got['first_job']:.2f} s vs {TARGET_FIRST:.0f} s: "
                  f"{verdict(got['first_job'], TARGET_FIRST)} (no time target on PostgreSQL)")
    print(harness.load_average())


if __name__ == "__main__":
    main()
