"""Checkpoint retention: what a trial keeps once it can no longer train.

A trial can still train while it is unfinished, and — for ``hpsweep extend``, which
carries the best trials of a sweep's last search stage into a new stage — while it is
among the ``carry`` best of that stage: those keep their 'last' checkpoint as it is
(all a resume reads; their 'best' loses its optimizer state like any other). Every
other finished trial of a closed stage keeps at most its 'best' weights (raw and EMA,
no optimizer state) and its snapshots likewise, if the policy (``checkpoints:`` in the
config, ``Retention``) keeps it: the ``top`` best of its stage, all, or none. Seeds
stages (retrained for an ensemble) keep every finished trial's weights.

Cleanup runs after the transaction that closed a stage (never inside it: the carried
copies of the next stage commit first) and one trial per transaction, so a crash
mid-way leaves each trial either untouched or cleaned. Re-running it is harmless
(``hpsweep gc`` does that for whole databases).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator.config import ConfigError, SweepConfig
from coordinator.rank import is_scored, rank
from coordinator.stages import outcomes
from storage import retention as store
from storage import sweeps as sweep_store
from storage import trials as trial_store
from storage.db import transact
from storage.models import StageKind, StageStatus
from worker.nn.checkpoint import CheckpointError
from worker.nn.saved import weights_only

log = logging.getLogger("hpsweep.retention")

_CLOSED = (StageStatus.DONE.value, StageStatus.CANCELLED.value)
_WEIGHTS = ("best", "snapshot")  # kinds a kept trial keeps (without optimizer state)
# what a finished trial keeps: every checkpoint, its weights only, nothing
RESUMABLE, WEIGHTS, NOTHING = "resumable", "weights", "nothing"


@dataclass(frozen=True)
class Freed:
    trials: int = 0  # trials whose checkpoints changed
    bytes: int = 0  # checkpoint bytes no longer stored
    skipped: int = 0  # sweeps left as they are (their config does not parse)

    def __add__(self, other: Freed) -> Freed:
        return Freed(self.trials + other.trials, self.bytes + other.bytes,
                     self.skipped + other.skipped)


def retention_plan(s: Session, sweep_id: int) -> dict[int, str]:
    """Trial id -> what it keeps (``RESUMABLE``: its 'last' checkpoint as it is, for
    ``extend``; ``WEIGHTS``; ``NOTHING``), for every finished trial of the sweep's closed
    stages (trials left out keep everything)."""
    sweep = sweep_store.get_sweep(s, sweep_id)
    assert sweep is not None
    cfg = SweepConfig.from_dict(sweep.config)
    stages = sweep_store.stages_of(s, sweep_id)
    search = [st for st in stages if st.kind == StageKind.SEARCH.value]
    plan: dict[int, str] = {}
    for st in stages:
        if st.status not in _CLOSED:
            continue
        ranked = rank(outcomes(trial_store.trials_of(s, sweep_id, st.id)))
        scored = [t.trial_id for t in ranked if is_scored(t)]
        if st.kind != StageKind.SEARCH.value:
            kept = set(scored)
        elif cfg.checkpoints.keep == "all":
            kept = {t.trial_id for t in ranked}
        else:
            kept = set(scored[:cfg.checkpoints.top]) if cfg.checkpoints.keep == "top" else set()
        carried = set()
        if search and st.id == search[-1].id and st.idx < len(cfg.stages):
            done = [t.trial_id for t in ranked if t.status == "done"]
            carried = set(done[:cfg.stages[st.idx].carry])  # `extend` may carry these
        plan.update({t.trial_id: RESUMABLE if t.trial_id in carried else
                     WEIGHTS if t.trial_id in kept else NOTHING
                     for t in ranked if trial_store.is_final(t.status)})
    return plan


def apply_retention(engine: Engine, sweep_id: int) -> Freed:
    """Apply the sweep's retention policy to its closed stages; idempotent. A sweep whose
    stored config does not parse is left as it is (nothing can say what it may drop)."""
    try:
        plan = transact(engine, lambda s: retention_plan(s, sweep_id))
    except ConfigError as exc:
        log.warning("sweep %d: checkpoints left as they are: its stored config does not "
                    "parse: %s", sweep_id, str(exc).replace("\n", "; "))
        return Freed(skipped=1)
    freed = Freed()
    for trial_id, keep in plan.items():
        freed += transact(engine, lambda s, t=trial_id, k=keep: _retain_trial(s, t, k))
    if freed.trials:
        log.info("sweep %d: %d trial(s) cleaned, %d checkpoint bytes freed", sweep_id,
                 freed.trials, freed.bytes)
    return freed


def apply_retention_of_stage(engine: Engine, stage_id: int) -> Freed:
    """``apply_retention`` for the sweep of ``stage_id`` (after its advancement)."""
    sweep_id = transact(engine, lambda s: store.sweep_of_stage(s, stage_id))
    return Freed() if sweep_id is None else apply_retention(engine, sweep_id)


def _retain_trial(s: Session, trial_id: int, keep: str) -> Freed:
    """One trial, one transaction: drop what it no longer needs."""
    rows = store.checkpoint_sizes(s, trial_id)
    if not rows or (keep == WEIGHTS and all(k != "last" for k, _, _ in rows)):
        return Freed()  # nothing stored, or cleaned before (a finished trial has 'last')
    before = sum(n for _, _, n in rows)
    after = sum(n for k, _, n in rows if k == "last") if keep == RESUMABLE else 0
    if keep != NOTHING:
        if keep == WEIGHTS:
            store.drop_checkpoints(s, trial_id, tuple({k for k, _, _ in rows} - set(_WEIGHTS)))
        for kind, epoch, size in rows:
            if kind not in _WEIGHTS:
                continue
            slim = _slim(trial_id, store.checkpoint_blob(s, trial_id, kind, epoch))
            if slim is not None:
                store.rewrite_checkpoint(s, trial_id, kind, epoch, slim)
            after += len(slim) if slim is not None else size
    else:
        store.drop_checkpoints(s, trial_id, tuple({k for k, _, _ in rows}))
    return Freed(int(after < before), before - after)


def _slim(trial_id: int, data: bytes | None) -> bytes | None:
    """The weights-only copy of ``data``, None to leave it as it is (nothing to drop, or
    a checkpoint that does not decode: never made worse than it is)."""
    if data is None:
        return None
    try:
        return weights_only(data)
    except CheckpointError as exc:
        log.warning("trial %d: checkpoint left as it is: %s", trial_id, exc)
        return None


@dataclass(frozen=True)
class Collected:
    freed: Freed
    size_before: int | None  # the database's size (SQLite: its files), if known
    size_after: int | None


def collect(engine: Engine, sweep_ids: list[int], vacuum: bool = False) -> Collected:
    """``hpsweep gc``: apply the retention policy to these sweeps, then (``vacuum``) give
    the space back: SQLite ``VACUUM`` rewrites the file, PostgreSQL ``VACUUM FULL
    checkpoints`` rewrites that table and its TOAST (both lock out writers meanwhile)."""
    before = database_size(engine)
    freed = Freed()
    for sweep_id in sweep_ids:
        freed += apply_retention(engine, sweep_id)
    if vacuum:
        _vacuum(engine)
    return Collected(freed, before, database_size(engine))


def _vacuum(engine: Engine) -> None:
    """Outside any transaction, as both databases require."""
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()  # autocommit: hpsweep's SQLite connections BEGIN by hand
        try:
            raw.driver_connection.execute("VACUUM")
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL too
        finally:
            raw.close()
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM FULL checkpoints")


def database_size(engine: Engine) -> int | None:
    """Bytes the database takes: SQLite's file and its WAL, PostgreSQL's
    ``pg_database_size``."""
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if not path or path == ":memory:":
            return None
        return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar())


def collected_text(c: Collected) -> str:
    text = f"gc: {c.freed.trials} trial(s) cleaned, {_mb(c.freed.bytes)} of checkpoints freed"
    if c.freed.skipped:
        text += f"; {c.freed.skipped} sweep(s) left as they are (stored config unreadable)"
    if c.size_before is not None and c.size_after is not None:
        text += f"; database {_mb(c.size_before)} -> {_mb(c.size_after)}"
        if c.size_after >= c.size_before and c.freed.bytes:
            text += " (free pages stay in the file until `hpsweep gc --vacuum`)"
    return text


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
