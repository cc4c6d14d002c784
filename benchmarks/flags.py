"""Does the search react? Boundary flags on real digits runs, and a range that travels.

    python benchmarks/flags.py [--seeds N] [--travel-seeds N] [--processes P]

Every sweep runs through the product's own code in this process (``search.run_sweep``:
``create_sweep``, ``run_attempt`` for every trial, ``advance`` at each stage's end, as
workers do; only the queue is left out), on scikit-learn's digits with SGD, one hidden
layer of 64 units, ``learning_rate`` and ``reg`` searched (``reg`` log-uniform over
1e-6..1e-1, whose effect at one epoch is small: it also shows how often a flat
parameter is flagged).

1. Flag rate (issue 12): one stage of 12 one-epoch trials per seed, over N (20) seeds.
   SGD on digits learns with rates of about 5e-2..2; the ranges below sit three decades
   below every useful rate (all trials at chance, the loss falling with the rate), three
   decades above (every trial diverges), and around the optimum. Targets: the far
   ranges flagged on the right side in 100 % of seeds, the interior one in <= 5 %.
2. Travel (issue 12): a sweep whose learning rate starts at 1e-9..1e-7 (3 stages:
   30 x 1 epoch, 30 x 3, 20 x 10 = 80 trials) must end with a best validation accuracy
   >= 0.95 in >= 9 of 10 seeds; printed per seed with the ranges each stage sampled.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from typing import Any

import harness
from search import run_sweep

TRAIN = {"depth": 1, "hidden_size": 64, "batch_size": 64, "update_rule": "sgd"}
REG = {"dist": "log_uniform", "low": 1e-6, "high": 1e-1}
RANGES = {  # name -> (learning-rate range, the side that must be flagged or None)
    "far too low (1e-9..1e-6)": ((1e-9, 1e-6), "high"),
    "far too high (1e2..1e4)": ((1e2, 1e4), "low"),
    "interior (1e-3..1e2)": ((1e-3, 1e2), None),
}
TRAVEL_STAGES = [{"trials": 30, "epochs": 1}, {"trials": 30, "epochs": 3},
                 {"trials": 20, "epochs": 10}]


def space(low: float, high: float) -> dict[str, Any]:
    return {"learning_rate": {"dist": "log_uniform", "low": low, "high": high}, "reg": REG}


def flags_of(engine: Any, sweep_id: int) -> list[tuple[str, str]]:
    with engine.connect() as c:
        return [tuple(r) for r in c.exec_driver_sql("SELECT param, side FROM boundary_flags")]


def flag_job(job: tuple[str, int]) -> tuple[str, int, list[tuple[str, str]]]:
    name, seed = job
    (low, high), _ = RANGES[name]
    cfg = harness.config("flags", "digits", space(low, high), [{"trials": 12, "epochs": 1}],
                         TRAIN, seed=seed)
    return name, seed, run_sweep(cfg, flags_of)


def travel_of(engine: Any, sweep_id: int) -> tuple[float, list[str], bool]:
    with engine.connect() as c:
        return _travel_rows(c)


def _travel_rows(c: Any) -> tuple[float, list[str], bool]:
    best = c.exec_driver_sql("SELECT MAX(best_val_acc) FROM trials WHERE status = 'done'"
                             ).scalar()
    ranges = [f"[{lo:.0e}, {hi:.0e}]" for lo, hi in c.exec_driver_sql(
        "SELECT r.low, r.high FROM stage_ranges r JOIN stages s ON s.id = r.stage_id "
        "WHERE r.param = 'learning_rate' ORDER BY s.idx")]
    chance = c.exec_driver_sql("SELECT at_chance FROM stages ORDER BY idx DESC LIMIT 1"
                               ).scalar()
    return float(best or 0.0), ranges, bool(chance)


def travel_job(seed: int) -> tuple[int, tuple[float, list[str], bool]]:
    cfg = harness.config("travel", "digits", space(1e-9, 1e-7), TRAVEL_STAGES, TRAIN,
                         seed=seed)
    return seed, run_sweep(cfg, travel_of)


def pool_map(fn: Any, jobs: list[Any], processes: int) -> list[Any]:
    if processes <= 1:
        return [fn(j) for j in jobs]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return pool.map(fn, jobs, chunksize=1)


def flag_rates(seeds: int, processes: int) -> bool:
    results = pool_map(flag_job, [(n, s) for n in RANGES for s in range(seeds)], processes)
    rows, ok = [], True
    for name, (_, want) in RANGES.items():
        got = [f for n, _, f in results if n == name]
        lr = [dict(f).get("learning_rate") for f in got]
        right = sum(side == want for side in lr) if want else sum(s is None for s in lr)
        wrong = sum(side is not None and side != want for side in lr)
        reg = sum(any(p == "reg" for p, _ in f) for f in got)
        rate = right / len(got)
        met = rate == 1.0 if want else (len(got) - right) / len(got) <= 0.05
        ok = ok and met
        rows.append([name, want or "none", f"{rate:.0%} ({right}/{len(got)})", str(wrong),
                     f"{reg}/{len(got)}", "MET" if met else "MISSED"])
    print(harness.table(["learning-rate range", "flag wanted", "as wanted",
                             "wrong side", "reg flagged", "target"], rows))
    return ok


def travel(seeds: int, processes: int) -> bool:
    results = pool_map(travel_job, list(range(seeds)), processes)
    rows = [[str(seed), f"{best:.4f}", " -> ".join(ranges), "yes" if chance else "no"]
            for seed, (best, ranges, chance) in results]
    print(harness.table(["seed", "best val_acc", "learning_rate range per stage",
                             "last stage at chance"], rows))
    hits = sum(best >= 0.95 for _, (best, _, _) in results)
    need = -(-9 * seeds // 10)
    print(f"best val_acc >= 0.95 in {hits}/{seeds} seeds (target >= {need}): "
          f"{'MET' if hits >= need else 'MISSED'}")
    return hits >= need


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="seeds per flag-rate range (0: skip)")
    ap.add_argument("--travel-seeds", type=int, default=10)
    ap.add_argument("--processes", type=int, default=2, help="sweeps run side by side")
    args = ap.parse_args()
    print("\n".join(harness.machine_lines()))
    started = time.perf_counter()
    print(f"\n1. flag rate: 12 one-epoch trials (SGD, digits), {args.seeds} seeds per range")
    ok = flag_rates(args.seeds, args.processes) if args.seeds else True
    print(f"\n2. travel: learning_rate from 1e-9..1e-7, stages {TRAVEL_STAGES}")
    ok = travel(args.travel_seeds, args.processes) and ok
    print(f"\nall targets {'MET' if ok else 'MISSED'}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
