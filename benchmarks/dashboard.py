"""Dashboard speed: a 50,000-trial sweep's page data, live latency, worker overhead.

    python benchmarks/dashboard.py [--quick] [--trials N] [--only sqlite] [--overhead]

1. Page data. For SQLite and PostgreSQL, a sweep of N (50,000) finished trials over
   three stages, bulk-inserted (``tests/support/synthetic_sweep.py``: parameters,
   curves, flags, an ensemble). Each endpoint the sweep page calls, plus the sweeps
   list and a trial page, computed as the server computes it (in-process, read-only
   engine, JSON encoded: the first call and the median of 5; wall and CPU time), then
   over HTTP to a real ``hpsweep dashboard`` process (the first request, before the
   server's per-change cache holds it). Target: under 1 s each.
2. Live. A trial of that sweep finished through hpsweep's storage functions (claim,
   finish), 5 times; the time until a client polling ``/api/version`` every second,
   as the pages do, holds sweep data counting it. Target: under 2 s.
3. ``--overhead``: ``overhead.py``'s measurement (SQLite, embedded Redis, 2 workers,
   one-epoch trials), alternately without and with 3 viewers polling a dashboard on the
   benchmark's database as the pages do (the server runs throughout, idle between).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import harness
from overhead import tiny_config
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator.dashboard import payload
from storage import attempts
from storage.db import make_engine, transact
from tests.support.dashboard_server import dashboard, request
from tests.support.db import rows
from tests.support.synthetic_sweep import build

TARGET_PAGE_S, TARGET_LIVE_S = 1.0, 2.0
POLL_S = 1.0  # the pages' polling interval (static/common.js POLL_MS)


def timed(fn: Callable[[], Any], repeats: int = 5) -> tuple[float, float, float]:
    """(first call s, median s, median CPU s) of ``fn()`` JSON-encoded."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.thread_time()
        json.dumps(fn(), default=str)
        walls.append(time.perf_counter() - w)
        cpus.append(time.thread_time() - c)
    return walls[0], statistics.median(walls), statistics.median(cpus)


def in_process(engine: Engine, sweep_id: int, trial_id: int) -> list[list[str]]:
    calls = {
        "sweep page data": lambda: payload.sweep(engine, sweep_id),
        "sweep points": lambda: payload.points(engine, sweep_id),
        "change token": lambda: payload.version(engine, sweep_id, None),
        "sweeps list": lambda: payload.sweeps(engine),
        "trial page": lambda: payload.trial(engine, trial_id),
    }
    out = []
    for name, fn in calls.items():
        first, med, cpu = timed(fn)
        out.append([name, f"{first * 1e3:.0f}", f"{med * 1e3:.0f}", f"{cpu * 1e3:.0f}"])
    return out


def over_http(base: str, sweep_id: int, trial_id: int) -> list[list[str]]:
    out = []
    for path in (f"/api/sweep/{sweep_id}", f"/api/sweep/{sweep_id}/points",
                 f"/api/version?sweep={sweep_id}", "/api/sweeps", f"/api/trial/{trial_id}"):
        t0 = time.perf_counter()
        reply = request(base + path)
        wall = time.perf_counter() - t0
        assert reply.status == 200, (path, reply.status)
        out.append([path, f"{wall * 1e3:.0f}", f"{len(reply.body) / 1024:.0f}"])
    return out


def live_latency(base: str, engine: Engine, sweep_id: int, trial_id: int) -> float:
    """Seconds from finishing ``trial_id`` to a page-like poller holding data with it."""
    def finished() -> int:
        return json.loads(request(f"{base}/api/sweep/{sweep_id}").body)["best_so_far"]["finished"]

    before = finished()
    last = json.loads(request(f"{base}/api/version?sweep={sweep_id}").body)["version"]
    time.sleep(POLL_S * (0.2 + 0.6 * (trial_id % 5) / 4))  # land anywhere in a poll interval
    started = time.perf_counter()

    def finish(s: Session) -> None:
        assert attempts.claim(s, engine, trial_id, "bench", "bench", 30.0) is not None
        attempts.finish(s, engine, trial_id, "bench", "done")

    transact(engine, finish)
    next_poll = started + POLL_S * ((trial_id % 7) / 7)  # the page's phase is arbitrary
    while True:
        time.sleep(max(0.0, next_poll - time.perf_counter()))
        next_poll += POLL_S
        now = json.loads(request(f"{base}/api/version?sweep={sweep_id}").body)["version"]
        if now != last and finished() == before + 1:
            return time.perf_counter() - started


def page_data(kind: str, n: int) -> None:
    with harness.database(kind) as db_url:
        writer = make_engine(db_url)
        t0 = time.perf_counter()
        sweep_id = build(writer, n, name="big", running=5)
        built = time.perf_counter() - t0
        trial_id = rows(writer, "SELECT min(id) FROM trials WHERE status = 'done'")[0][0]
        queued = [r[0] for r in rows(writer, "SELECT id FROM trials WHERE status = 'queued' "
                                             "ORDER BY id")]
        reader = make_engine(db_url, readonly=True, create=False)
        print(f"\n{kind}: {n} trials bulk-inserted in {built:.1f} s; {harness.load_average()}")
        print(harness.table(["computed in-process", "first ms", "median ms", "cpu ms"],
                                in_process(reader, sweep_id, trial_id)))
        with dashboard(db_url) as base:
            print(harness.table(["over HTTP (first request)", "ms", "KiB"],
                                    over_http(base, sweep_id, trial_id)))
            lat = [live_latency(base, writer, sweep_id, t) for t in queued]
        print(f"live: a finished trial reached a 1 s poller in {statistics.median(lat):.2f} s "
              f"(median of {len(lat)}; max {max(lat):.2f} s; target < {TARGET_LIVE_S:g} s)")
        reader.dispose()
        writer.dispose()


class Viewers:
    """``n`` page-like clients polling a dashboard each second, refetching on change."""

    def __init__(self, base: str, n: int) -> None:
        self.base, self.stop = base, threading.Event()
        self.requests = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def _get(self, path: str) -> Any:
        self.requests += 1
        return json.loads(request(self.base + path).body)

    def _run(self) -> None:
        last = None
        while not self.stop.wait(POLL_S):
            version = self._get("/api/version")
            if version != last:
                last = version
                sweeps = self._get("/api/sweeps")["sweeps"]
                if sweeps:
                    self._get(f"/api/sweep/{sweeps[0]['id']}")
                    self._get(f"/api/sweep/{sweeps[0]['id']}/points")

    def __enter__(self) -> Viewers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


def overhead(trials: int, repeats: int) -> None:
    plain, watched, cpu_plain, cpu_watched, served = [], [], [], [], 0
    with harness.database("sqlite") as db_url, harness.redis_server("embedded") as redis_url, \
            harness.Bench(db_url, redis_url, 2) as bench, dashboard(db_url) as base:
        # the server starts (and idles) before timing: its start-up is not the workers' cost
        bench.run(tiny_config("warmup", 8, 1))
        for _ in range(repeats):
            r = bench.run(tiny_config("plain", trials, 1))
            plain.append(r.overhead_ms)
            cpu_plain.append(r.cpu_overhead_ms)
            with Viewers(base, 3) as viewers:
                r = bench.run(tiny_config("watched", trials, 1))
                served += viewers.requests
            watched.append(r.overhead_ms)
            cpu_watched.append(r.cpu_overhead_ms)
    med = statistics.median
    print(f"\noverhead.py measurement, SQLite, embedded Redis, 2 workers, {trials} one-epoch "
          f"trials, {repeats} pair(s): {med(plain):.2f} ms per trial without a dashboard, "
          f"{med(watched):.2f} ms with a dashboard and 3 viewers polling "
          f"({served} requests served); cpu {med(cpu_plain):.2f} vs {med(cpu_watched):.2f} ms; "
          f"{harness.load_average()}")


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    print(f"  ({title}: {time.perf_counter() - t0:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="10,000 trials; overhead: 200 trials, 3 pairs")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    ap.add_argument("--overhead", action="store_true",
                    help="also measure the workers' overhead with a dashboard polling")
    args = ap.parse_args()
    n = args.trials or (10_000 if args.quick else 50_000)
    print("\n".join(harness.machine_lines()))
    for kind in harness.backends(args.only):
        with section(kind):
            page_data(kind, n)
    if args.overhead:
        with section("overhead"):
            overhead(200 if args.quick else 300, 3 if args.quick else 5)
    print(f"\ntargets: each page's data < {TARGET_PAGE_S:g} s of server time; a finished "
          f"trial on the page < {TARGET_LIVE_S:g} s")


if __name__ == "__main__":
    main()
