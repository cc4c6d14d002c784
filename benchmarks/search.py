"""Search quality at equal cost: coarse-to-fine stages against pure random search.

    python benchmarks/search.py [--quick] [--seeds N] [--tune] [--prune]

Each search gets a budget of about 300 training epochs and runs in this process
through the product's own code: ``create_sweep`` samples stage 0 (``space.py``),
``worker.trainer.run_attempt`` trains and records every trial (checkpoints, carried
trials resumed from them), and ``coordinator.stages.advance`` ranks the stage's
quorum (``rank.py``), flags edges and refines the next ranges (``refine.py``) and
plans the next stage, exactly as workers do; only the queue is left out. Methods:

  random            one stage of 60 trials x 5 epochs (300 epochs)
  coarse-to-fine    60 x 1 epoch, 20 x 5, 7 x 20 (294 epochs with one carried trial
                    per boundary), with the StageConfig defaults (keep, margin,
                    carry, edge, quorum) or with other settings

Reported per dataset over N (10) sweep seeds: mean and standard deviation of the best
validation accuracy of any trial, of the epochs actually trained (diverged trials stop
early; carried trials continue from their checkpoint), and the mean paired gain over
random search (same seed). Target: coarse-to-fine's mean beats random's by more than
the spread (standard deviation) of either, on both datasets.

One validation set for all seeds, as the notes recommend: a sweep's seed also draws
its train/validation/test split, so for each seed the dataset file holds the rows in
an order that makes that seed's split the same rows every time (checked against
``worker.data.split``). The spread then measures the searches, not the luck of the
split (``--vary-split`` lets each seed split the data its own way instead).

Datasets: ``digits`` (scikit-learn's 8x8 digits, 1,797 rows, 10 classes) and
``hard``: scikit-learn's ``make_classification`` with 3,000 rows, 40 features
(16 informative, 8 redundant), 6 classes of 3 clusters each at class_sep 1.0, and
3% flipped labels. It is harder because its classes are clustered, overlapping
and noisy: the best network reaches ~80%, not ~99%, most of the space underfits
or overfits, so the right capacity, learning rate and regularisation matter and
random 5-epoch trials rarely find them.

``--prune`` also runs coarse-to-fine with a stage ``prune`` rule (``median``, and
``halving``) in stages 1 and 2, whose trial counts are raised so that the epochs pruning
saves are spent on more trials (about the defaults' budget; epochs spent are printed), and
prints each paired by seed against the defaults: the gain or loss of pruning at equal budget.

``--tune`` first varies one stage setting at a time around the defaults and
prints each variant's mean best accuracy on both datasets (that is how the
defaults were chosen).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import harness
from search_data import digits_arrays, hard_dataset, seed_files
from sqlalchemy import Engine
from threadpoolctl import threadpool_limits

from coordinator.config import StageConfig
from coordinator.ensemble import evaluate
from coordinator.launch import create_sweep, prepare_dataset
from coordinator.stages import advance
from storage.db import make_engine, transact
from worker.dataset_cache import DatasetCache
from worker.trainer import TrialContext, run_attempt

T = TypeVar("T")
BUDGET = 300
RANDOM_STAGES = [{"trials": 60, "epochs": 5}]
C2F_STAGES = [{"trials": 60, "epochs": 1}, {"trials": 20, "epochs": 5},
              {"trials": 7, "epochs": 20}]
# coarse-to-fine with pruning in the stages longer than one epoch: the epochs pruning saves
# buy more trials, sized so that a search spends about BUDGET epochs (printed beside)
PRUNE_VARIANTS = {
    "c2f + prune median": [
        {"trials": 60, "epochs": 1},
        {"trials": 32, "epochs": 5, "prune": {"rule": "median", "after": 1, "min_trials": 4}},
        {"trials": 12, "epochs": 20, "prune": {"rule": "median", "after": 2, "min_trials": 4}}],
    "c2f + prune halving": [
        {"trials": 60, "epochs": 1},
        {"trials": 36, "epochs": 5, "prune": {"rule": "halving", "after": 1, "eta": 3,
                                              "min_trials": 4}},
        {"trials": 14, "epochs": 20, "prune": {"rule": "halving", "after": 2, "eta": 3,
                                               "min_trials": 4}}],
}
# the StageConfig defaults before this benchmark tuned them
OLD_DEFAULTS = {"keep": 0.25, "margin": 0.1, "carry": 1, "edge": 0.1, "quorum": 0.8}
TRAIN = {"depth": 1, "batch_size": 64, "update_rule": "nesterov",
         "schedule": {"kind": "step", "every": 5, "factor": 0.5}}
SPACE = {"learning_rate": {"dist": "log_uniform", "low": 1.0e-4, "high": 1.0},
         "reg": {"dist": "log_uniform", "low": 1.0e-6, "high": 1.0e-1},
         "dropout": {"dist": "uniform", "low": 0.0, "high": 0.5},
         "hidden_size": {"dist": "int_log_uniform", "low": 16, "high": 256},
         "momentum": {"dist": "choice", "values": [0.5, 0.9, 0.95, 0.99]}}
TUNE_GRID = {"keep": [0.1, 0.15, 0.35, 0.5], "margin": [0.0, 0.25, 0.5], "carry": [0, 2, 3],
             "edge": [0.05, 0.2], "quorum": [1.0, 0.6]}


@dataclass(frozen=True)
class Result:
    best: float  # best validation accuracy of any done trial
    epochs: int  # epochs trained (carried trials' inherited epochs not counted)
    test: float = 0.0  # held-out test accuracy of that trial's best checkpoint


def sweep_config(dataset: str, seed: int, stages: list[dict[str, Any]],
                 settings: dict[str, Any] | None) -> harness.SweepConfig:
    stages = [dict(st, **(settings or {})) if i < len(stages) - 1 else dict(st)
              for i, st in enumerate(stages)]
    return harness.config("search", dataset, SPACE, stages, TRAIN, seed=seed)


_CACHE = DatasetCache()
_PREPARED: dict[str, Any] = {}


def run_sweep(cfg: harness.SweepConfig, query: Callable[[Engine, int], T]) -> T:
    """One sweep to the end, in this process, on a temporary SQLite file; ``query(engine,
    sweep_id)`` reads what the caller wants from it before it goes."""
    if cfg.dataset not in _PREPARED:
        _PREPARED[cfg.dataset] = prepare_dataset(cfg)
    with tempfile.TemporaryDirectory() as folder, threadpool_limits(1):
        engine = make_engine(f"sqlite:///{folder}/search.db")
        made = create_sweep(engine, cfg, "search", _PREPARED[cfg.dataset])
        ctx = TrialContext(engine=engine, worker="search", lease_seconds=3600.0,
                           datasets=_CACHE)
        trial_ids = first_trials(engine, made)
        while trial_ids:
            stage_id, todo = None, list(trial_ids)
            for tid in todo:  # a pruning trial handed back to wait for earlier ones: again
                outcome = run_attempt(ctx, tid)
                stage_id = outcome.stage_id
                if outcome.status == "released":
                    todo.append(tid)
            assert stage_id is not None
            done = advance(engine, stage_id)
            trial_ids = list(done.trial_ids) if done else []
        out = query(engine, made.sweep_id)
        engine.dispose()
    return out


def first_trials(engine: Engine, made: Any) -> list[int]:
    """Stage 0's trial ids (``--before`` may run a revision whose launch returned them)."""
    if hasattr(made, "trial_ids"):
        return list(made.trial_ids)
    from storage.sweeps import trial_ids_by_idx

    return transact(engine, lambda s: trial_ids_by_idx(s, made.stage_id))


def best_and_epochs(engine: Engine, sweep_id: int) -> Result:
    with engine.connect() as c:
        best = c.exec_driver_sql("SELECT MAX(best_val_acc) FROM trials "
                                 "WHERE status = 'done'").scalar()
        epochs = c.exec_driver_sql(
            "SELECT COUNT(*) FROM curves c JOIN trials t ON t.id = c.trial_id "
            "LEFT JOIN trials p ON p.id = t.parent_id "
            "WHERE c.epoch > COALESCE(p.epochs, 0)").scalar()
    # the best single model, as `hpsweep ensemble` scores it (validation and test split)
    single = evaluate(engine, sweep_id, "top-k", 1).single if best is not None else None
    return Result(float(best or 0.0), int(epochs), single.test_acc if single else 0.0)


def run_search(job: tuple[str, int, str, dict[str, Any] | None]) -> tuple[str, Result]:
    """One sweep to the end, in this process; returns its best accuracy and epochs trained."""
    dataset, seed, method, settings = job  # dataset: this seed's .npz file
    stages = RANDOM_STAGES if method == "random" else PRUNE_VARIANTS.get(method, C2F_STAGES)
    return method, run_sweep(sweep_config(dataset, seed, stages, settings), best_and_epochs)


def child_main() -> None:
    """Run the jobs read as JSON from stdin with whatever code was imported first (the
    ``--before`` tree); print the results as JSON."""
    jobs, processes = json.load(sys.stdin)
    done = run_all([tuple(j) for j in jobs], processes)
    json.dump([[m, dataclasses.asdict(r)] for m, r in done], sys.stdout)


def run_before(rev: str, jobs: list[tuple[str, int, str, dict[str, Any] | None]],
               processes: int) -> list[tuple[str, Result]]:
    """The same jobs with the product code of git revision ``rev`` (this benchmark's code):
    the packages of ``rev`` are imported before this script, so they are the ones used."""
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(["git", "-C", str(harness.ROOT), "archive", rev],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        # that revision's packages and benchmark harness first, then this script on top
        code = (f"import sys; sys.path.insert(0, {folder!r}); import coordinator, storage, "
                f"worker; sys.path.insert(0, {folder + '/benchmarks'!r}); import harness; "
                f"sys.path[0] = {str(Path(__file__).parent)!r}; import search; "
                "search.child_main()")
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps([jobs, processes]),
                             capture_output=True, text=True, cwd=folder)
        if out.returncode != 0:
            raise RuntimeError(f"--before {rev} failed:\n{out.stderr[-3000:]}")
    return [(m, Result(**r)) for m, r in json.loads(out.stdout)]


def run_all(jobs: list[tuple[str, int, str, dict[str, Any] | None]],
            processes: int) -> list[tuple[str, Result]]:
    if processes <= 1:
        return [run_search(j) for j in jobs]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return pool.map(run_search, jobs, chunksize=1)


def summary(results: list[Result]) -> tuple[float, float, float, float]:
    accs = [r.best for r in results]
    eps = [float(r.epochs) for r in results]
    return (statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0,
            statistics.mean(eps), statistics.stdev(eps) if len(eps) > 1 else 0.0)


Files = dict[str, dict[int, str]]  # dataset name -> seed -> .npz path


def compare(datasets: Files, seeds: list[int], methods: dict[str, dict | None],
            processes: int) -> dict[tuple[str, str], list[Result]]:
    jobs = [(label, datasets[label][seed], seed, name, settings) for label in datasets
            for seed in seeds for name, settings in methods.items()]
    done = run_all([(path, seed, name, settings) for _, path, seed, name, settings in jobs],
                   processes)
    out: dict[tuple[str, str], list[Result]] = {}
    for (label, _, _, name, _), (_, res) in zip(jobs, done, strict=True):
        out.setdefault((label, name), []).append(res)
    return out


def print_table(results: dict[tuple[str, str], list[Result]], datasets: list[str],
                methods: list[str]) -> bool:
    rows, ok = [], True
    for data in datasets:
        base = results[(data, "random")]
        b_mean, b_sd, _, _ = summary(base)
        for name in methods:
            res = results[(data, name)]
            mean, sd, ep, ep_sd = summary(res)
            gains = [r.best - b.best for r, b in zip(res, base, strict=True)]
            verdict = ""
            if name != "random":
                beats = mean - b_mean > max(sd, b_sd)
                verdict = "yes" if beats else f"no (short by {max(sd, b_sd) - (mean - b_mean):.4f})"
                if name == "c2f defaults":
                    ok = ok and beats
            tests = [r.test for r in res]
            rows.append([data, name, f"{mean:.4f} ± {sd:.4f}",
                         f"{statistics.mean(tests):.4f} ± {_sd(tests):.4f}",
                         f"{ep:.0f} ± {ep_sd:.0f}",
                         f"{statistics.mean(gains):+.4f} ± {statistics.stdev(gains):.4f}"
                         if len(gains) > 1 else "", verdict])
    print(harness.table(["dataset", "method", "best val_acc (mean ± sd)",
                             "its test_acc (mean ± sd)", "epochs spent",
                             "paired gain vs random", "beats random by > either sd"], rows))
    return ok


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def print_paired(results: dict[tuple[str, str], list[Result]], datasets: list[str],
                 before: str, after: str = "c2f defaults", label: str = "") -> None:
    """Method ``before`` and method ``after`` side by side, paired by seed."""
    rows = []
    for data in datasets:
        old, new = results[(data, before)], results[(data, after)]
        for what, get in (("best val_acc", lambda r: r.best), ("its test_acc", lambda r: r.test),
                          ("epochs spent", lambda r: float(r.epochs))):
            a, b = [get(r) for r in old], [get(r) for r in new]
            diff = [y - x for x, y in zip(a, b, strict=True)]
            rows.append([data, what, f"{statistics.mean(a):.4f} ± {_sd(a):.4f}",
                         f"{statistics.mean(b):.4f} ± {_sd(b):.4f}",
                         f"{statistics.mean(diff):+.4f} ± {_sd(diff):.4f}",
                         f"{sum(d > 0 for d in diff)}/{sum(d < 0 for d in diff)}"])
    print(harness.table(["dataset", "metric", before, label or after,
                             "paired change", "seeds up/down"], rows))


def tune(datasets: Files, seeds: list[int], processes: int) -> None:
    """One setting at a time around the current defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(StageConfig)
                if f.name in OLD_DEFAULTS}
    variants: dict[str, dict | None] = {"random": None, "c2f defaults": dict(defaults)}
    for key, values in TUNE_GRID.items():
        for v in values:
            if v != defaults[key]:
                variants[f"{key}={v}"] = dict(defaults, **{key: v})
    results = compare(datasets, seeds, variants, processes)
    print_table(results, list(datasets), list(variants))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 seeds")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--processes", type=int, default=2, help="searches run side by side")
    ap.add_argument("--tune", action="store_true", help="vary one setting at a time first")
    ap.add_argument("--old-defaults", action="store_true",
                    help=f"also run the stage defaults before tuning ({OLD_DEFAULTS})")
    ap.add_argument("--before", metavar="REV", default=None,
                    help="also run the defaults with the product code of git revision REV "
                         "(e.g. main), side by side with this tree's")
    ap.add_argument("--prune", action="store_true",
                    help="also run coarse-to-fine with pruning (" + ", ".join(PRUNE_VARIANTS)
                         + ") at about the same budget")
    ap.add_argument("--vary-split", action="store_true",
                    help="let each seed draw its own train/validation split")
    args = ap.parse_args()
    seeds = list(range(args.seeds or (3 if args.quick else 10)))
    print("\n".join(harness.machine_lines()))
    defaults = {f.name: f.default for f in dataclasses.fields(StageConfig)
                if f.name in OLD_DEFAULTS}
    print(f"budget ~{BUDGET} epochs per search, {len(seeds)} seeds; StageConfig defaults now "
          f"{defaults}; before tuning {OLD_DEFAULTS}\n")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        datasets = {name: seed_files(name, *arrays, seeds, Path(folder), not args.vary_split)
                    for name, arrays in (("digits", digits_arrays()),
                                         ("hard", hard_dataset()))}
        if args.tune:
            tune(datasets, seeds, args.processes)
            print()
        methods: dict[str, dict | None] = {"random": None, "c2f defaults": None}
        if args.old_defaults:
            methods["c2f old defaults"] = dict(OLD_DEFAULTS)
        if args.prune:
            methods.update(dict.fromkeys(PRUNE_VARIANTS))
        results = compare(datasets, seeds, methods, args.processes)
        before = f"c2f defaults @{args.before}" if args.before else None
        if before:
            jobs = [(label, datasets[label][seed], seed) for label in datasets for seed in seeds]
            done = run_before(args.before, [(path, seed, "c2f defaults", None)
                                            for _, path, seed in jobs], args.processes)
            for (label, _, _), (_, res) in zip(jobs, done, strict=True):
                results.setdefault((label, before), []).append(res)
            methods[before] = None
    ok = print_table(results, list(datasets), list(methods))
    if before:
        print(f"\nbefore ({args.before}) vs after, equal budget, same seeds and split:")
        print_paired(results, list(datasets), before, label="c2f defaults (this tree)")
    for variant in PRUNE_VARIANTS if args.prune else ():
        print(f"\npruning at about equal budget ({variant}: stages {PRUNE_VARIANTS[variant]}) "
              "vs the defaults, same seeds and split:")
        print_paired(results, list(datasets), "c2f defaults", variant)
    print(f"\ntarget (coarse-to-fine with the defaults beats random by more than either's "
          f"spread, on both datasets): {'MET' if ok else 'MISSED'}; "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
