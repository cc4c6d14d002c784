"""Cost flat as results grow: a database holding 50,000 finished trials x 20 epochs.

    python benchmarks/scale.py [--quick] [--only sqlite]

For SQLite and PostgreSQL, a sweep named ``digits-mlp`` of 50,000 finished trials
(3 stages, 20 epochs each: 1,000,000 ``curves`` rows, 550,000 ``params`` rows) is
bulk-loaded straight into SQL (executemany on SQLite, COPY on PostgreSQL; then
ANALYZE). Measured against an empty database of the same kind, in the same run:

1. the per-trial overhead of ``overhead.py`` (one-epoch trials of a tiny network,
   2 workers), alternating between the empty and the full database; target: within
   1.2x of the empty database's;
2. ``hpsweep status digits-mlp`` and ``hpsweep best digits-mlp``: the report the
   command computes (``status_text`` / ``best_text``, in-process, median of 5) and the
   whole command as a new process (Python start-up and imports included, median of 3);
   target: under 0.5 s;
3. the README's example queries (its ```sql blocks, verbatim), median of 5;
   target: under 0.1 s each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import harness
import numpy as np
from overhead import tiny_config
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from coordinator.launch import fixed_params, prepare_dataset
from coordinator.report import best_text, status_text
from storage import sweeps as sweep_store
from storage import transitions
from storage.db import make_engine, transact

BIG_NAME = "digits-mlp"
STAGES = (25_000, 15_000, 10_000)
EPOCHS = 20
TARGET_RATIO, TARGET_REPORT_S, TARGET_QUERY_S = 1.2, 0.5, 0.1
TRIAL_COLS = ("id", "sweep_id", "stage_id", "idx", "status", "seed", "epochs", "best_val_acc",
              "best_val_loss", "best_epoch", "attempts", "worker")
CURVE_COLS = ("trial_id", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
              "seconds")
PARAM_COLS = ("trial_id", "name", "value", "value_text")


def big_config(n_trials: int) -> harness.SweepConfig:
    """configs/digits.yaml's search with three stages of n_trials in all, 20 epochs each."""
    sizes = [round(n_trials * k / sum(STAGES)) for k in STAGES]
    return harness.config(
        BIG_NAME, "digits",
        space={"learning_rate": {"dist": "log_uniform", "low": 1e-4, "high": 1.0},
               "reg": {"dist": "log_uniform", "low": 1e-6, "high": 1e-1},
               "dropout": {"dist": "uniform", "low": 0.0, "high": 0.5},
               "hidden_size": {"dist": "int_log_uniform", "low": 16, "high": 256},
               "momentum": {"dist": "choice", "values": [0.5, 0.9, 0.95, 0.99]}},
        stages=[{"trials": n, "epochs": EPOCHS} for n in sizes],
        train={"depth": 1, "batch_size": 64, "update_rule": "nesterov",
               "schedule": {"kind": "step", "every": 5, "factor": 0.5}})


def create_big_sweep(engine: Engine, n_trials: int) -> tuple[int, list[tuple[int, int]]]:
    """The sweep row and its (done) stages through the storage layer; (sweep id,
    [(stage id, n_trials)])."""
    cfg = big_config(n_trials)
    blob, sha, shape = prepare_dataset(cfg)

    def work(s: Session) -> tuple[int, list[tuple[int, int]]]:
        ds = sweep_store.store_dataset(s, sha, "digits", blob, shape)
        sweep = sweep_store.create_sweep(s, name=BIG_NAME, config=cfg.to_dict(), dataset_id=ds,
                                         seed=0, queue="hpsweep", n_stages=len(cfg.stages),
                                         max_attempts=3)
        stages = [(sweep_store.add_stage(s, sweep, i, st.epochs, st.trials,
                                         {p: d.to_row() for p, d in cfg.space.items()},
                                         quorum=st.trials), st.trials)
                  for i, st in enumerate(cfg.stages)]
        transitions.finish_sweep(s, sweep)
        return sweep, stages

    sweep_id, stages = transact(engine, work)
    with engine.begin() as c:
        c.execute(text("UPDATE stages SET status = 'done' WHERE sweep_id = :s"), {"s": sweep_id})
    return sweep_id, stages


def param_cells(value: Any) -> tuple[float | None, str | None]:
    """A params row's (value, value_text), as storage.sweeps writes them."""
    if isinstance(value, str):
        return None, value
    if isinstance(value, list | tuple):
        return None, json.dumps(value)
    return float(value), None


def rows(sweep_id: int, stages: list[tuple[int, int]], first_id: int,
         cfg: harness.SweepConfig) -> tuple[list[tuple], list[tuple], Iterator[tuple]]:
    """(trials, params, curves) rows for the big sweep, from one seeded generator."""
    from coordinator.space import sample_configs

    rng = np.random.default_rng(0)
    trials, params = [], []
    fixed = fixed_params(cfg)
    tid = first_id
    for stage_id, n in stages:
        samples = sample_configs(cfg.space, n, rng)
        acc = np.round(rng.uniform(0.1, 0.99, n) * 252) / 252  # ties, as on a real split
        loss = rng.uniform(0.05, 2.3, n)
        diverged = rng.random(n) < 0.05
        for i, sample in enumerate(samples):
            ok = not diverged[i]
            trials.append((tid, sweep_id, stage_id, i, "done" if ok else "diverged", 7, EPOCHS,
                           float(acc[i]) if ok else None, float(loss[i]) if ok else None,
                           int(rng.integers(1, EPOCHS + 1)) if ok else None, 1, "bench"))
            params += [(tid, k, *param_cells(v)) for k, v in {**fixed, **sample}.items()]
            tid += 1
    ids = [t[0] for t in trials]

    def curves() -> Iterator[tuple]:
        for start in range(0, len(ids), 5000):
            chunk = ids[start:start + 5000]
            m = rng.uniform(0.0, 1.0, (len(chunk), EPOCHS, 5)).tolist()
            for tid_, per_epoch in zip(chunk, m, strict=True):
                for e, (a, b, c, d, lr) in enumerate(per_epoch, 1):
                    yield (tid_, e, 2.3 * a, b, 2.3 * c, d, lr * 0.1, 0.004)

    return trials, params, curves()


def bulk_load(engine: Engine, n_trials: int) -> tuple[int, float]:
    """Fill the database; returns (the big sweep's id, seconds taken)."""
    started = time.perf_counter()
    sweep_id, stages = create_big_sweep(engine, n_trials)
    with engine.connect() as c:
        first = int(c.execute(text("SELECT COALESCE(MAX(id), 0) + 1 FROM trials")).scalar())
    trials, params, curves = rows(sweep_id, stages, first, big_config(n_trials))
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "sqlite":
            _sqlite_load(raw, trials, params, curves)
        else:
            _pg_copy(raw, trials, params, curves)
        raw.commit()
    finally:
        raw.close()
    with engine.connect() as c:
        c.execute(text("ANALYZE"))
        c.commit()
    return sweep_id, time.perf_counter() - started


def _insert_sql(table: str, cols: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


def _sqlite_load(raw: Any, trials: list, params: list, curves: Iterator[tuple]) -> None:
    cur = raw.cursor()
    cur.execute("BEGIN IMMEDIATE")
    cur.executemany(_insert_sql("trials", TRIAL_COLS), trials)
    cur.executemany(_insert_sql("params", PARAM_COLS), params)
    cur.executemany(_insert_sql("curves", CURVE_COLS), curves)


def _pg_copy(raw: Any, trials: list, params: list, curves: Iterator[tuple]) -> None:
    cur = raw.cursor()
    for table, cols, data in (("trials", TRIAL_COLS, trials), ("params", PARAM_COLS, params),
                              ("curves", CURVE_COLS, curves)):
        with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
            for row in data:
                copy.write_row(row)
    cur.execute("SELECT setval(pg_get_serial_sequence('trials', 'id'), "
                "(SELECT MAX(id) FROM trials))")


# ---------------------------------------------------------------- measurements


def timed(fn: Callable[[], object], n: int) -> float:
    fn()  # warm: the first call pays for connections and statement compilation
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cli_seconds(args: list[str], db_url: str, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "coordinator.cli", *args, "--db", db_url],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       cwd=harness.ROOT)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def startup_seconds(n: int = 3) -> float:
    """A new Python process importing what ``hpsweep status`` imports, and nothing else."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import coordinator.cli, coordinator.live"],
                       check=True, cwd=harness.ROOT)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def readme_queries() -> list[str]:
    readme = (harness.ROOT / "README.md").read_text()
    return [q.strip() for q in re.findall(r"```sql\n(.*?)```", readme, flags=re.S)]


def report_lines(db_url: str, sweep_id: int) -> list[list[str]]:
    engine = make_engine(db_url)
    reader = make_engine(db_url, readonly=True)
    out = [["Python start-up + the command's imports", "", f"{startup_seconds() * 1e3:.0f} ms",
            ""]]
    for fn, cli in ((lambda: status_text(engine, sweep_id), "status"),
                    (lambda: best_text(engine, sweep_id, 5), "best")):
        t_lib = timed(fn, 5)
        t_cli = cli_seconds([cli, BIG_NAME], db_url)
        out.append([f"hpsweep {cli} {BIG_NAME}", f"{t_lib * 1e3:.1f} ms",
                    f"{t_cli * 1e3:.0f} ms", "ok" if t_lib < TARGET_REPORT_S else "MISSED"])
    for i, sql in enumerate(readme_queries(), 1):
        def run(sql: str = sql) -> int:
            with reader.connect() as c:
                return len(c.execute(text(sql)).all())
        n_rows = run()
        t = timed(run, 5)
        out.append([f"README query {i} ({n_rows} rows)", f"{t * 1e3:.1f} ms", "",
                    "ok" if t < TARGET_QUERY_S else "MISSED"])
    engine.dispose()
    reader.dispose()
    return out


def overhead_ratio(empty_url: str, big_url: str, redis_url: str, trials: int,
                   repeats: int) -> tuple[float, float, float]:
    """Median per-trial overhead (ms) on the empty and the full database, and the ratio
    of the medians; the runs alternate so drift in the machine's speed hits both."""
    empty, full = [], []
    with harness.Bench(empty_url, redis_url) as b_empty, \
            harness.Bench(big_url, redis_url) as b_full:
        for bench in (b_empty, b_full):
            bench.run(tiny_config("warmup", 8, 1))
        for _ in range(repeats):
            empty.append(b_empty.run(tiny_config("one-epoch", trials, 1)).overhead_ms)
            full.append(b_full.run(tiny_config("one-epoch", trials, 1)).overhead_ms)
    e, f = statistics.median(empty), statistics.median(full)
    return e, f, f / e


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 trials, fewer repeats")
    ap.add_argument("--trials", type=int, default=None, help="finished trials to load")
    ap.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    args = ap.parse_args()
    n_big = args.trials or (10_000 if args.quick else sum(STAGES))
    sweep_trials, repeats = (100, 2) if args.quick else (200, 4)
    kinds = [k for k in ("sqlite", "postgresql") if args.only in (None, k)]
    if "postgresql" in kinds and not harness.postgres_answers():
        print("  skipped postgresql: no server at 127.0.0.1:5432", file=sys.stderr)
        kinds.remove("postgresql")
    print("\n".join(harness.machine_lines()))
    print(f"{n_big:,} finished trials x {EPOCHS} epochs loaded; overhead: {repeats} x "
          f"{sweep_trials} one-epoch trials per database, alternating; "
          f"{harness.load_average()}\n")
    table, ratios = [], []
    with harness.embedded_redis() as redis_url:
        for kind in kinds:
            with harness.database(kind) as empty_url, harness.database(kind) as big_url:
                engine = make_engine(big_url)
                sweep_id, load_s = bulk_load(engine, n_big)
                engine.dispose()
                size = os.path.getsize(big_url.split("///", 1)[1]) if kind == "sqlite" else 0
                print(f"  {kind}: loaded in {load_s:.0f} s"
                      + (f" ({size / 2**20:.0f} MiB)" if size else ""), file=sys.stderr)
                e, f, ratio = overhead_ratio(empty_url, big_url, redis_url, sweep_trials,
                                             repeats)
                ratios.append(ratio)
                table.append([kind, "per-trial overhead, empty -> full",
                              f"{e:.2f} -> {f:.2f} ms", f"{ratio:.2f}x",
                              "ok" if ratio <= TARGET_RATIO else "MISSED"])
                table += [[kind, *r] for r in report_lines(big_url, sweep_id)]
    print(harness.table(["database", "measure", "time (in-process)",
                             "whole command / ratio", "target"], table))
    print(f"\ntargets: overhead within {TARGET_RATIO}x of the empty database's; status and best "
          f"under {TARGET_REPORT_S} s (in-process; the command column adds Python start-up); "
          f"README queries under {TARGET_QUERY_S} s. {harness.load_average()}")


if __name__ == "__main__":
    main()
