"""How big a finished sweep's database is, before and after checkpoint retention.

A CIFAR-sized coarse-to-fine sweep (60 x 1, 20 x 3, 6 x 5 epochs; Adam with a running
average of the weights; a synthetic set of 8-bit "images" with 3,072 features) runs to
the end with one in-process worker and cleanup switched off: the database every
version before retention wrote. ``hpsweep gc --vacuum`` then applies the default policy.
Printed: the database size before and after, what the trials kept need (their weights,
raw and EMA, as float32) plus the dataset blob, and the ratios.

    python benchmarks/storage_size.py                      # the full sweep (CPU hours)
    python benchmarks/storage_size.py --rows 2000 --scale 0.25 --hidden 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402

from benchmarks.harness import leased_redis, machine_lines  # noqa: E402
from coordinator import jobs, retention  # noqa: E402
from coordinator.cli import main  # noqa: E402
from storage.db import make_engine  # noqa: E402
from worker.nn import checkpoint  # noqa: E402

STAGES = ((60, 1), (20, 3), (6, 5))
FEATURES, CLASSES = 3072, 10


def synthetic_images(path: Path, rows: int, seed: int = 0) -> int:
    """uint8 rows with a class-dependent mean (learnable, not trivial); its raw bytes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, rows).astype(np.uint8)
    centres = rng.integers(64, 192, (CLASSES, FEATURES))
    X = np.clip(centres[y] + rng.normal(0, 48, (rows, FEATURES)), 0, 255).astype(np.uint8)
    np.savez(path, X=X, y=y)
    return X.nbytes + y.nbytes


def sweep_config(data: Path, scale: float, hidden: int) -> dict:
    stages = [{"trials": max(1, round(n * scale)), "epochs": e} for n, e in STAGES]
    return {"name": "cifar-sized", "dataset": str(data), "seed": 0,
            "train": {"depth": 1, "hidden_size": hidden, "batch_size": 100,
                      "update_rule": "adam", "ema_decay": 0.999},
            "space": {"learning_rate": {"dist": "log_uniform", "low": 1e-5, "high": 1e-2},
                      "reg": {"dist": "log_uniform", "low": 1e-6, "high": 1e-1}},
            "stages": stages}


def kept_weight_bytes(engine: Engine) -> int:
    """float32 bytes of the raw and EMA weights of every trial that kept a 'best' row."""
    total = 0
    with engine.connect() as conn:
        for (data,) in conn.execute(text("SELECT data FROM checkpoints WHERE kind = 'best'")):
            arrays = checkpoint.decode(bytes(data))
            total += sum(a.nbytes for k, a in arrays.items() if k.startswith(("param.", "ema.")))
    return total


def run(rows: int, scale: float, hidden: int) -> None:
    cli = CliRunner()
    with tempfile.TemporaryDirectory() as tmp, leased_redis() as redis_url:
        raw = synthetic_images(Path(tmp) / "images.npz", rows)
        cfg = Path(tmp) / "sweep.yaml"
        cfg.write_text(yaml.safe_dump(sweep_config(Path(tmp) / "images.npz", scale, hidden)))
        db = f"sqlite:///{tmp}/hpsweep.db"
        jobs.apply_retention_of_stage = lambda engine, stage_id: None  # as before retention
        for args in (("launch", str(cfg)), ("worker", "--burst", "--log-level", "warning")):
            res = cli.invoke(main, [*args, "--db", db, "--redis", redis_url])
            assert res.exit_code == 0, res.output
        engine = make_engine(db)
        with engine.connect() as conn:
            ds = conn.execute(text("SELECT LENGTH(data) FROM datasets")).scalar()
            trials = conn.execute(text("SELECT COUNT(*) FROM trials")).scalar()
        before = retention.database_size(engine)
        res = cli.invoke(main, ["gc", "--vacuum", "--db", db])
        assert res.exit_code == 0, res.output
        after = retention.database_size(engine)
        kept = kept_weight_bytes(engine)
        print("\n".join(machine_lines()))
        shape = [(st["trials"], st["epochs"]) for st in sweep_config(cfg, scale, hidden)["stages"]]
        print(f"sweep: {trials} trials, stages (trials, epochs) {shape}, hidden {hidden}, "
              f"{rows} rows x {FEATURES} uint8 features")
        print(f"dataset: raw {raw / 1e6:.1f} MB, blob {ds / 1e6:.1f} MB ({ds / raw:.3f}x)")
        print(res.output.strip())
        print(f"database before {before / 1e6:.1f} MB, after {after / 1e6:.1f} MB "
              f"({after / before:.1%} of before)")
        print(f"kept weights (raw + EMA) {kept / 1e6:.1f} MB + dataset {ds / 1e6:.1f} MB: "
              f"after / (kept + dataset) = {after / (kept + ds):.2f}x")


def main_() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000, help="rows of the synthetic set")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of each stage's trials")
    ap.add_argument("--hidden", type=int, default=500, help="hidden layer width")
    a = ap.parse_args()
    run(a.rows, a.scale, a.hidden)


if __name__ == "__main__":
    main_()
