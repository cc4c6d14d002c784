"""A finished-looking sweep of any size, written by bulk inserts in seconds.

For the dashboard's tests and its 50,000-trial benchmark: no worker trains
anything; the rows have the shapes a real sweep leaves (three stages narrowing
their ranges, done / diverged / failed / cancelled trials, carried trials,
curves, checkpoints, a boundary flag, an ensemble).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, func, insert, select, update

from storage.models import (
    BoundaryFlag,
    Checkpoint,
    Curve,
    Dataset,
    Ensemble,
    Param,
    Stage,
    StageRange,
    Sweep,
    Trial,
)

SPACE = {"learning_rate": (1e-5, 1.0, "log", False), "reg": (1e-6, 1e-1, "log", False),
         "hidden_size": (16, 512, "log", True), "dropout": (0.0, 0.5, "linear", False)}
CHUNK = 5000
Range = tuple[float, float, str, bool]  # low, high, scale, integer
START = datetime(2026, 1, 1)


def build(engine: Engine, n_trials: int, *, name: str = "synthetic", seed: int = 0,
          epochs: tuple[int, ...] = (1, 3, 6), running: int = 0) -> int:
    """Write a sweep of ``n_trials`` trials over ``len(epochs)`` stages (60/30/10 %);
    the last ``running`` trials of the last stage are left queued. Returns its id."""
    rng = np.random.default_rng(seed)
    shares = _stage_sizes(n_trials, len(epochs))
    with engine.begin() as conn:
        sweep_id = _sweep(conn, name, shares, epochs)
        next_id = _max_id(conn) + 1
        parents: list[int] = []
        for idx, (n, ep) in enumerate(zip(shares, epochs, strict=True)):
            ranges = _ranges(idx)
            stage_id = conn.execute(insert(Stage).values(
                sweep_id=sweep_id, idx=idx, epochs=ep, n_trials=n, quorum=n,
                status="done" if idx < len(epochs) - 1 or not running else "running",
                kind="search")).inserted_primary_key[0]
            conn.execute(insert(StageRange), [
                {"stage_id": stage_id, "param": p, "low": lo, "high": hi, "scale": sc,
                 "integer": whole} for p, (lo, hi, sc, whole) in ranges.items()])
            left = running if idx == len(epochs) - 1 else 0
            ids = _trials(conn, rng, sweep_id, stage_id, next_id, n, ep, ranges, parents, left)
            parents = ids[: max(1, n // 10)]
            next_id += n
        conn.execute(insert(BoundaryFlag).values(
            sweep_id=sweep_id, stage_id=stage_id, param="learning_rate", value=ranges[
                "learning_rate"][1], low=ranges["learning_rate"][0],
            high=ranges["learning_rate"][1], side="high", at_limit=False, scale="log"))
        conn.execute(insert(Ensemble).values(
            sweep_id=sweep_id, method="top-k", members=json.dumps(parents[:3]), val_acc=0.95,
            test_acc=0.94, single_val_acc=0.93, single_test_acc=0.92))
        if not running:
            conn.execute(update(Sweep).where(Sweep.id == sweep_id).values(status="done"))
    return sweep_id


def _stage_sizes(n: int, k: int) -> list[int]:
    weights = [0.6, 0.3, 0.1][:k] if k <= 3 else [1 / k] * k
    sizes = [max(1, int(n * w / sum(weights))) for w in weights]
    sizes[0] += n - sum(sizes)
    return sizes


def _ranges(idx: int) -> dict[str, Range]:
    """Each stage narrows toward learning_rate ~ 1e-2, reg ~ 1e-4."""
    out = {}
    for p, (lo, hi, scale, whole) in SPACE.items():
        shrink = 0.5 ** idx
        if scale == "log":
            mid = {"learning_rate": -2.0, "reg": -4.0}.get(p, (math.log10(lo) + math.log10(hi)) / 2)
            half = (math.log10(hi) - math.log10(lo)) / 2 * shrink
            a, b = max(math.log10(lo), mid - half), min(math.log10(hi), mid + half)
            a, b = 10 ** a, 10 ** b
        else:
            mid, half = (lo + hi) / 2, (hi - lo) / 2 * shrink
            a, b = mid - half, mid + half
        out[p] = (round(a) if whole else a, round(b) if whole else b, scale, whole)
    return out


def _sweep(conn: Connection, name: str, sizes: list[int], epochs: tuple[int, ...]) -> int:
    ds = conn.execute(insert(Dataset).values(
        sha256=f"synthetic-{name}-{id(sizes)}".ljust(64, "0")[:64], name="synthetic",
        n_rows=10, n_features=2, n_classes=2, data=b"-")).inserted_primary_key[0]
    config = {"name": name, "dataset": "synthetic",
              "stages": [{"trials": n, "epochs": e} for n, e in zip(sizes, epochs, strict=True)]}
    return conn.execute(insert(Sweep).values(
        name=name, status="running", config=json.dumps(config), dataset_id=ds, seed=0,
        queue="hpsweep", n_stages=len(sizes), max_attempts=3)).inserted_primary_key[0]


def _max_id(conn: Connection) -> int:
    return conn.scalar(select(func.max(Trial.id))) or 0


def _score(values: dict[str, float]) -> float:
    """A smooth made-up accuracy peaking at learning_rate 1e-2, reg 1e-4."""
    d = (math.log10(values["learning_rate"]) + 2) ** 2 + 0.3 * (math.log10(values["reg"]) + 4) ** 2
    return 0.1 + 0.88 * math.exp(-d / 4) - 0.05 * values["dropout"]


def _trials(conn: Connection, rng: np.random.Generator, sweep_id: int, stage_id: int,
            first_id: int, n: int, epochs: int, ranges: dict[str, Range], parents: list[int],
            left_queued: int) -> list[int]:
    ids = list(range(first_id, first_id + n))
    trials: list[dict[str, Any]] = []
    params: list[dict[str, Any]] = []
    curves: list[dict[str, float]] = []
    ckpts: list[dict[str, Any]] = []
    for k, tid in enumerate(ids):
        values = {}
        for p, (lo, hi, scale, whole) in ranges.items():
            v = (10 ** rng.uniform(math.log10(lo), math.log10(hi)) if scale == "log"
                 else rng.uniform(lo, hi))
            values[p] = float(round(v)) if whole else float(v)
        status, acc = _outcome(rng, values, k, n, left_queued)
        carried = parents[k] if k < len(parents) else None
        trials.append({"id": tid, "sweep_id": sweep_id, "stage_id": stage_id, "idx": k,
                       "status": status, "seed": k, "epochs": epochs, "parent_id": carried,
                       "best_val_acc": acc, "best_val_loss": None if acc is None else 1 - acc,
                       "best_epoch": epochs - 1 if acc is not None else None, "attempts": 1,
                       "finished_at": None if status == "queued" else START + timedelta(
                           seconds=tid),
                       "error": "RuntimeError: worker lost\nValueError: boom" if status == "failed"
                       else None})
        params.extend({"trial_id": tid, "name": p, "value": v, "value_text": None}
                      for p, v in values.items())
        if acc is not None:
            curves.extend(_curve(tid, e, acc * (e + 1) / epochs, values["learning_rate"])
                          for e in range(epochs))
            if k < 20:
                ckpts.append({"trial_id": tid, "kind": "best", "epoch": epochs - 1, "val_acc": acc,
                              "data": b"\0" * 64})
    for table, rows in ((Trial, trials), (Param, params), (Curve, curves), (Checkpoint, ckpts)):
        for i in range(0, len(rows), CHUNK):
            conn.execute(insert(table), rows[i:i + CHUNK])
    return ids


def _curve(trial_id: int, epoch: int, acc: float, lr: float) -> dict[str, float]:
    return {"trial_id": trial_id, "epoch": epoch, "train_loss": 1.5 - acc, "train_acc": acc,
            "val_loss": 1.6 - acc, "val_acc": acc, "lr": lr, "seconds": 0.01}


def _outcome(rng: np.random.Generator, values: dict[str, float], k: int, n: int,
             left_queued: int) -> tuple[str, float | None]:
    if k >= n - left_queued:
        return "queued", None
    roll = rng.random()
    if values["learning_rate"] > 0.3 and roll < 0.7:
        return "diverged", None
    if roll < 0.01:
        return "failed", None
    if roll < 0.02:
        return "cancelled", None
    return "done", float(min(0.999, max(0.0, _score(values) + rng.normal(0, 0.01))))
