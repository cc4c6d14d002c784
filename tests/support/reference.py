"""The chaos-free reference run of a sweep file, and its comparison with a faulty run.

A reference trains every trial in this process, one attempt each, stage after stage; a
sweep that workers finished through kills, timeouts and lost jobs must reproduce its
curves exactly (the fault tests' "curve OK").
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from sqlalchemy import Engine

from tests.support.db import rows

Curves = dict[tuple[int, int], tuple[str, list[float | None]]]



def _val_loss(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def sweep_curves(engine: Engine, sweep_id: int) -> Curves:
    """(stage idx, trial idx) -> (status, val_loss of epochs 1..n in order)."""
    out: Curves = {}
    for st, idx, status in rows(engine, """
            SELECT s.idx, t.idx, t.status FROM trials t JOIN stages s ON s.id = t.stage_id
            WHERE t.sweep_id = :s""", s=sweep_id):
        out[(st, idx)] = (status, [])
    for st, idx, epoch, loss in rows(engine, """
            SELECT s.idx, t.idx, c.epoch, c.val_loss FROM curves c
            JOIN trials t ON t.id = c.trial_id JOIN stages s ON s.id = t.stage_id
            WHERE t.sweep_id = :s ORDER BY s.idx, t.idx, c.epoch""", s=sweep_id):
        losses = out[(st, idx)][1]
        assert epoch == len(losses) + 1, f"trial ({st}, {idx}): epoch {epoch} after {losses}"
        losses.append(_val_loss(loss))
    return out


_REFERENCE: dict[bytes, Curves] = {}


def reference_curves(config: Path, tmp: Path) -> Curves:
    """The chaos-free run of ``config``: every trial trained in this process, one attempt
    each, stage after stage. Cached by the config file's bytes (same dataset path)."""
    key = config.read_bytes() + Path(yaml.safe_load(config.read_text())["dataset"]).read_bytes()
    if key not in _REFERENCE:
        _REFERENCE[key] = _run_reference(config, tmp)
    return _REFERENCE[key]


def _run_reference(config: Path, tmp: Path) -> Curves:
    from threadpoolctl import threadpool_limits

    from coordinator.config import load_config
    from coordinator.launch import create_sweep, prepare_dataset
    from coordinator.stages import advance
    from storage.db import make_engine, transact
    from storage.sweeps import trial_ids_by_idx
    from worker.dataset_cache import DatasetCache
    from worker.trainer import TrialContext, run_attempt

    tmp.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{tmp / 'reference.db'}")
    cfg = load_config(config)
    made = create_sweep(engine, cfg, "reference", prepare_dataset(cfg))
    ctx = TrialContext(engine=engine, worker="reference", lease_seconds=600.0,
                       datasets=DatasetCache(None))
    trial_ids = transact(engine, lambda s: trial_ids_by_idx(s, made.stage_id))
    with threadpool_limits(limits=1):  # the workers pin BLAS to one thread too
        while trial_ids:
            stage_id = None
            for tid in trial_ids:
                outcome = run_attempt(ctx, tid)
                assert outcome.status in ("done", "diverged"), outcome
                stage_id = outcome.stage_id
            assert stage_id is not None
            advanced = advance(engine, stage_id)
            assert advanced is not None
            trial_ids = list(advanced.trial_ids)
    curves = sweep_curves(engine, made.sweep_id)
    engine.dispose()
    return curves


def assert_curves_match(engine: Engine, sweep_id: int, reference: Curves) -> None:
    """Curve OK for every trial: the same trials, statuses, and val_loss per epoch, exactly,
    as the uninterrupted run (one row per epoch 1..E is checked by ``sweep_curves``)."""
    got = sweep_curves(engine, sweep_id)
    assert sorted(got) == sorted(reference), (sorted(got), sorted(reference))
    for key, (status, losses) in reference.items():
        g_status, g_losses = got[key]
        assert g_status == status, f"trial {key}: status {g_status}, reference {status}"
        assert g_losses == losses, f"trial {key}: val_loss {g_losses} != reference {losses}"
