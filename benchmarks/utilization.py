"""Idle workers at stage boundaries: efficiency of a 3-stage sweep on 2 workers.

    python benchmarks/utilization.py [--quick] [--quorums 1.0,0.8]

A synthetic set (70,000 rows of 512 standard-normal float32 features, 10 classes
labelled by a random two-layer ReLU teacher: CIFAR-10's 3,072 features would make
trials far longer than the issue's 0.5 to 3 s; with ~50,000 training rows, like
CIFAR-10's, a checkpoint is as large relative to an epoch's work) and a 3-stage sweep
of 32, 16 and 8 trials of varied lengths (hidden_size searched over 192..768, stages
of 1, 2 and 3 epochs), run on 2 real ``hpsweep worker`` processes:

    efficiency = sum of in-trial training time (curves.seconds) / (workers x wall time)

``wall`` runs from enqueueing stage 0 to the sweep being done; the workers are
started and have the dataset cached before. Each run uses the same seed, once per
``quorum`` value (every stage): 1.0 is a strict barrier (the next stage is planned
when the last trial of a stage ends, so one worker idles while the other finishes
it); below 1 the next stage is planned from the first ``ceil(quorum x trials)``
trials by index, and the rest run beside it. The last stage always waits for all
its trials: its tail is idle time no quorum can remove, which hpsweep shortens by
enqueueing the last stage's longest trials first (``coordinator.enqueue_order``; the last
column replays the last stage's measured trial lengths through 2 free workers in the
order hpsweep enqueued them and in index order). Target: efficiency >= 0.95.

The idle worker-seconds split in two, by RQ's count of the time each worker spent
inside jobs: ``no work`` = workers x wall - time in jobs (a worker waiting for a job:
stage boundaries, the last stage's tail, the queue's own latency) and ``in jobs`` =
time in jobs - training time (claims, checkpoints and curve rows, which for these
0.5-3 MB networks is mostly encoding and writing one checkpoint per epoch).
"""

from __future__ import annotations

import argparse
import heapq
import tempfile
from pathlib import Path

import harness
import numpy as np
from sqlalchemy import text

from coordinator.enqueue_order import longest_first, trial_cost
from storage.db import transact
from storage.trials import trial_params

ROWS, FEATURES, CLASSES = 70_000, 512, 10
TARGET = 0.95
EPOCHS = (1, 2, 3)


def synthetic_cifar(path: Path) -> str:
    """Standard-normal rows labelled by a random ReLU teacher (learnable, not trivial)."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((ROWS, FEATURES), dtype=np.float32)
    w1 = rng.standard_normal((FEATURES, 64), dtype=np.float32) / np.sqrt(FEATURES)
    w2 = rng.standard_normal((64, CLASSES), dtype=np.float32)
    y = (np.maximum(X @ w1, 0) @ w2).argmax(1).astype(np.int64)
    np.savez(path, X=X, y=y)
    return str(path)


def sweep_config(dataset: str, quorum: float, quick: bool) -> harness.SweepConfig:
    trials = (16, 8, 4) if quick else (32, 16, 8)
    return harness.config(
        f"utilization-q{quorum:g}", dataset,
        space={"learning_rate": {"dist": "log_uniform", "low": 1e-4, "high": 1e-2},
               "reg": {"dist": "log_uniform", "low": 1e-5, "high": 1e-2},
               "hidden_size": {"dist": "int_log_uniform", "low": 192, "high": 768}},
        stages=[{"trials": n, "epochs": e, "quorum": quorum}
                for n, e in zip(trials, EPOCHS, strict=True)],
        train={"depth": 1, "batch_size": 128, "update_rule": "momentum", "momentum": 0.9},
        seed=1)


def warmup_config(dataset: str) -> harness.SweepConfig:
    """Same dataset and seed (so the workers cache the same split), two tiny trials."""
    return harness.config("warmup", dataset, {"learning_rate": {"dist": "log_uniform",
                                                                "low": 1e-3, "high": 1e-2}},
                          [{"trials": 2, "epochs": 1}], {"hidden_size": 8}, seed=1)


def trial_lengths(bench: harness.Bench, sweep_name: str) -> dict[int, list[tuple[int, float]]]:
    """Per stage index, (trial id, training seconds in this sweep) in index order."""
    q = text("SELECT st.idx, t.id, COALESCE(SUM(c.seconds), 0) FROM trials t "
             "JOIN stages st ON st.id = t.stage_id JOIN sweeps s ON s.id = t.sweep_id "
             "LEFT JOIN trials p ON p.id = t.parent_id "
             "LEFT JOIN curves c ON c.trial_id = t.id AND c.epoch > COALESCE(p.epochs, 0) "
             "WHERE s.name = :n GROUP BY st.idx, t.id, t.idx ORDER BY t.idx")
    out: dict[int, list[tuple[int, float]]] = {}
    with bench.reader.connect() as c:
        for idx, trial_id, seconds in c.execute(q, {"n": sweep_name}):
            out.setdefault(idx, []).append((trial_id, float(seconds)))
    return out


def enqueue_order(bench: harness.Bench, trial_ids: list[int], epochs: int) -> list[int]:
    """The last stage's trials in the order hpsweep enqueued them (the same cost model)."""
    with bench.reader.connect() as c:
        parent = dict(c.execute(text("SELECT t.id, p.epochs FROM trials t JOIN trials p "
                                     "ON p.id = t.parent_id")).all())
    params = transact(bench.engine, lambda s: trial_params(s, trial_ids))
    costs = [trial_cost(params[t], epochs - (parent.get(t) or 0), FEATURES, CLASSES)
             for t in trial_ids]
    return longest_first(trial_ids, costs)


def makespan(lengths: list[float], workers: int) -> float:
    """Finish time of list scheduling: each trial goes to the first free worker."""
    free = [0.0] * workers
    for length in lengths:
        heapq.heapreplace(free, free[0] + length)
    return max(free)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer trials per stage")
    ap.add_argument("--quorums", default="1.0,0.9,0.8,0.7",
                    help="comma-separated quorum values")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    quorums = [float(q) for q in args.quorums.split(",")]
    print("\n".join(harness.machine_lines()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpsweep-util-") as folder, \
            harness.sqlite_db() as db_url, harness.embedded_redis() as redis_url:
        dataset = synthetic_cifar(Path(folder) / "cifar-like.npz")
        bench = harness.Bench(db_url, redis_url, args.workers,
                              cache_dir=folder)
        with bench:
            bench.run(warmup_config(dataset))
            for quorum in quorums:
                cfg = sweep_config(dataset, quorum, args.quick)
                timing = bench.run(cfg)
                lengths = trial_lengths(bench, cfg.name)
                last = dict(lengths[max(lengths)])  # index order
                ordered = enqueue_order(bench, list(last), cfg.stages[-1].epochs)
                span_now = makespan([last[t] for t in ordered], args.workers)
                span_index = makespan(list(last.values()), args.workers)
                every = [x for per_stage in lengths.values() for _, x in per_stage]
                capacity = timing.workers * timing.wall
                rows.append([f"{quorum:g}", f"{timing.trials}", f"{min(every):.2f}-"
                             f"{max(every):.2f}", f"{timing.wall:.1f}",
                             f"{timing.train_seconds:.1f}", f"{timing.efficiency:.3f}",
                             f"{capacity - timing.train_seconds:.1f}",
                             f"{capacity - timing.job_seconds:.1f}",
                             f"{timing.job_seconds - timing.train_seconds:.1f}",
                             f"{span_now:.1f} / {span_index:.1f}"])
    print(f"\n{ROWS} x {FEATURES} synthetic set, stages of {EPOCHS} epochs, "
          f"{args.workers} workers, {harness.load_average()}\n")
    print(harness.table(
        ["quorum", "trials", "trial s (min-max)", "wall s", "train s", "efficiency",
         "idle worker-s", "no work", "in jobs", "last stage span s: LPT / index order"],
        rows))
    best = max(float(r[5]) for r in rows)
    print(f"\ntarget: efficiency >= {TARGET}: best {best:.3f} -> "
          f"{'MET' if best >= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
