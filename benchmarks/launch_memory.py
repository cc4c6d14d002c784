"""Peak memory of a launch against its trial count: it must not grow with the trials.

    python benchmarks/launch_memory.py [--trials 20000 200000] [--db URL]

For each count, a fresh process creates a one-stage sweep of that many one-epoch
spiral trials (``coordinator.launch.create_sweep``: the database part of `launch`,
sampled and inserted in batches in one transaction; no Redis) in a fresh SQLite file
(or the database given with ``--db``), and reports its peak RSS (``ru_maxrss``)
before and after. Before streaming,
a launch grew by ~12 KB per trial (24 GB for 100M trials); now the growth should be
the same for every count (a few MB: one batch of trials in flight).

    trials   seconds   rss before MB   rss after MB   growth MB
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "name": "mem", "dataset": "spiral", "seed": 0,
    "train": {"depth": 1, "hidden_size": 8, "batch_size": 64, "update_rule": "sgd"},
    "space": {"learning_rate": {"dist": "log_uniform", "low": 1e-3, "high": 1.0},
              "reg": {"dist": "log_uniform", "low": 1e-6, "high": 1e-2}},
}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def measure(trials: int, db_url: str) -> dict[str, float]:
    """In this process: import and prepare everything, then launch; peak RSS around it."""
    from coordinator.config import parse_config
    from coordinator.launch import create_sweep, prepare_dataset
    from storage.db import make_engine

    cfg = parse_config({**CONFIG, "stages": [{"trials": trials, "epochs": 1}]})
    dataset = prepare_dataset(cfg)
    engine = make_engine(db_url)
    before = peak_mb()
    started = time.perf_counter()
    create_sweep(engine, cfg, "mem", dataset)
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"trials": trials, "seconds": seconds, "before": before, "after": peak_mb()}


def run_child(trials: int, db_url: str) -> dict[str, float]:
    """``measure`` in a fresh Python process (peak RSS is per process)."""
    out = subprocess.run([sys.executable, __file__, "--child", str(trials), "--db", db_url],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--db", default=None, help="database URL (default: a temp SQLite file)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(measure(args.child, args.db)))
        return
    print(f"{'trials':>9} {'seconds':>8} {'rss before MB':>14} {'rss after MB':>13} "
          f"{'growth MB':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for i, n in enumerate(args.trials):
            url = args.db or f"sqlite:///{folder}/launch-{i}.db"
            got = run_child(n, url)
            print(f"{n:>9} {got['seconds']:>8.1f} {got['before']:>14.1f} {got['after']:>13.1f} "
                  f"{got['after'] - got['before']:>10.1f}")


if __name__ == "__main__":
    main()
