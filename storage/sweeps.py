"""Sweeps, stages, their ranges and boundary flags, and datasets.

Helpers take a ``Session`` first and never commit: callers frame the unit of
work (``storage.db.transact``). Callers get frozen dataclasses, not ORM rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.orm import Session

from storage import bulk
from storage.db import bind_of, cached_statement
from storage.models import (
    BoundaryFlag,
    Dataset,
    Param,
    Stage,
    StageKind,
    StageRange,
    StageStatus,
    Sweep,
    SweepStatus,
    Trial,
    TrialStatus,
)


@dataclass(frozen=True)
class SweepInfo:
    id: int
    name: str
    status: str
    config: dict[str, Any]
    dataset_sha: str
    seed: int
    queue: str
    n_stages: int
    max_attempts: int


@dataclass(frozen=True)
class StageInfo:
    id: int
    sweep_id: int
    idx: int
    epochs: int
    n_trials: int
    status: str
    kind: str = StageKind.SEARCH.value
    quorum: int = 0


@dataclass(frozen=True)
class TrialSpec:
    """A trial to create: its place in the stage, seed, budget and parameters."""

    idx: int
    seed: int
    epochs: int
    params: dict[str, Any]
    parent_id: int | None = None


@dataclass(frozen=True)
class FlagRow:
    param: str
    value: float
    low: float
    high: float
    side: str
    at_limit: bool
    scale: str = "linear"
    limit: str = ""
    reason: str = ""


def store_dataset(s: Session, sha: str, name: str, data: bytes, shape: tuple[int, int, int]) -> int:
    """The id of the dataset with this content hash, storing it once."""
    existing = s.scalar(select(Dataset.id).where(Dataset.sha256 == sha))
    if existing is not None:
        return existing
    n_rows, n_features, n_classes = shape
    row = Dataset(sha256=sha, name=name, data=data, n_rows=n_rows, n_features=n_features,
                  n_classes=n_classes)
    s.add(row)
    s.flush()
    return row.id


def dataset_bytes(s: Session, sha: str) -> bytes | None:
    return s.scalar(select(Dataset.data).where(Dataset.sha256 == sha))


def dataset_shape(s: Session, sha: str) -> tuple[int, int] | None:
    """(n_features, n_classes) of a stored dataset, without reading its bytes."""
    row = s.execute(select(Dataset.n_features, Dataset.n_classes)
                    .where(Dataset.sha256 == sha)).first()
    return (int(row[0]), int(row[1])) if row else None


def unique_sweep_name(s: Session, name: str) -> str:
    """``name`` if free, else ``name-2``, ``name-3``, …"""
    taken = set(s.scalars(select(Sweep.name).where(Sweep.name.like(f"{name}%"))))
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def create_sweep(s: Session, *, name: str, config: dict[str, Any], dataset_id: int, seed: int,
                 queue: str, n_stages: int, max_attempts: int) -> int:
    row = Sweep(name=name, config=json.dumps(config, sort_keys=True), dataset_id=dataset_id,
                seed=seed, queue=queue, n_stages=n_stages, max_attempts=max_attempts,
                status=SweepStatus.RUNNING.value)
    s.add(row)
    s.flush()
    return row.id


def add_stage(s: Session, sweep_id: int, idx: int, epochs: int, n_trials: int,
              ranges: dict[str, dict[str, Any]], kind: str = StageKind.SEARCH.value,
              quorum: int | None = None, launching: bool = False) -> int:
    """A new running stage with its ranges (``param -> to_row()`` dicts).

    ``quorum``: how many leading trials must finish before the next stage is
    planned (default: all of them). ``launching``: its trials come in later
    transactions (``add_launch_batch``, then ``end_launch``).
    """
    status = StageStatus.LAUNCHING if launching else StageStatus.RUNNING
    stage = Stage(sweep_id=sweep_id, idx=idx, epochs=epochs, n_trials=n_trials,
                  status=status.value, kind=kind,
                  quorum=n_trials if quorum is None else quorum)
    s.add(stage)
    s.flush()
    s.add_all(StageRange(stage_id=stage.id, param=p, **row) for p, row in ranges.items())
    return stage.id


def add_trials(s: Session, sweep_id: int, stage_id: int, specs: list[TrialSpec]) -> list[int]:
    """Create queued trials with their ``params`` rows; returns their ids in order.

    Plain rows with ids chosen up front, handed to the driver (``storage.bulk``): a
    launch streams up to a million trials through here in batches, so neither its
    memory nor its time per trial may grow with SQLAlchemy's per-row work.
    """
    if not specs:
        return []
    ids = bulk.new_ids(s, Trial.__table__, len(specs))
    bulk.insert_rows(s, Trial.__table__, TRIAL_COLUMNS, (
        (i, sweep_id, stage_id, t.idx, t.seed, t.epochs, t.parent_id,
         TrialStatus.QUEUED.value, 0) for i, t in zip(ids, specs, strict=True)))
    bulk.insert_rows(s, Param.__table__, PARAM_COLUMNS, (
        _param_row(trial_id, k, v) for trial_id, t in zip(ids, specs, strict=True)
        for k, v in t.params.items()))
    return ids


TRIAL_COLUMNS = ("id", "sweep_id", "stage_id", "idx", "seed", "epochs", "parent_id", "status",
                 "attempts")
PARAM_COLUMNS = ("trial_id", "name", "value", "value_text")


def trial_ids_by_idx(s: Session, stage_id: int, lo: int = 0, hi: int | None = None) -> list[int]:
    """Ids of the stage's trials with ``lo <= idx < hi`` (default: all), in ``idx`` order."""
    where = [Trial.stage_id == stage_id, Trial.idx >= lo]
    if hi is not None:
        where.append(Trial.idx < hi)
    return list(s.scalars(select(Trial.id).where(*where).order_by(Trial.idx)))


def _param_row(trial_id: int, name: str, value: Any) -> tuple[int, str, float | None, str | None]:
    """A ``params`` row in ``PARAM_COLUMNS`` order."""
    kind = type(value)
    if kind is float or kind is int:  # the common case first: a launch makes millions
        return (trial_id, name, float(value), None)
    if isinstance(value, str):
        return (trial_id, name, None, value)
    if isinstance(value, list | tuple):
        return (trial_id, name, None, json.dumps(value))
    return (trial_id, name, float(value), None)


def param_value(value: float | None, value_text: str | None) -> Any:
    """Inverse of the params row encoding (ints come back as floats; callers cast)."""
    if value_text is None:
        return value
    if value_text.startswith("["):
        return json.loads(value_text)
    return value_text


def _sweep_info(row: Sweep, sha: str) -> SweepInfo:
    return SweepInfo(id=row.id, name=row.name, status=row.status, config=json.loads(row.config),
                     dataset_sha=sha, seed=row.seed, queue=row.queue, n_stages=row.n_stages,
                     max_attempts=row.max_attempts)


def get_sweep(s: Session, name_or_id: str | int) -> SweepInfo | None:
    q = select(Sweep, Dataset.sha256).join(Dataset, Dataset.id == Sweep.dataset_id)
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        hit = s.execute(q.where(Sweep.id == int(name_or_id))).first()
        if hit is not None:
            return _sweep_info(*hit)
    hit = s.execute(q.where(Sweep.name == str(name_or_id))).first()
    return _sweep_info(*hit) if hit else None


def sweep_of_trial(s: Session | Connection, trial_id: int) -> int | None:
    """The id of the sweep a trial belongs to (None for an unknown trial). A prebuilt
    statement: a worker asks once per job, before it claims the trial."""
    stmt = cached_statement(bind_of(s), "sweep-of-trial", lambda: select(
        Trial.__table__.c.sweep_id).where(Trial.__table__.c.id == bindparam("p_trial")))
    return s.execute(stmt, {"p_trial": trial_id}).scalar()


def latest_sweep(s: Session) -> SweepInfo | None:
    sweep_id = s.scalar(select(func.max(Sweep.id)))
    return get_sweep(s, sweep_id) if sweep_id is not None else None


def stages_of(s: Session, sweep_id: int) -> list[StageInfo]:
    rows = s.scalars(select(Stage).where(Stage.sweep_id == sweep_id).order_by(Stage.idx))
    return [StageInfo(r.id, r.sweep_id, r.idx, r.epochs, r.n_trials, r.status, r.kind,
                      r.quorum)
            for r in rows]


def get_stage(s: Session, stage_id: int) -> StageInfo | None:
    r = s.get(Stage, stage_id)
    return (StageInfo(r.id, r.sweep_id, r.idx, r.epochs, r.n_trials, r.status, r.kind,
                      r.quorum)
            if r else None)


def stage_ranges(s: Session, stage_id: int) -> dict[str, dict[str, Any]]:
    rows = s.scalars(select(StageRange).where(StageRange.stage_id == stage_id)
                     .order_by(StageRange.param))
    return {r.param: {"low": r.low, "high": r.high, "scale": r.scale, "integer": r.integer,
                      "choices": r.choices} for r in rows}


def add_flags(s: Session, sweep_id: int, stage_id: int, flags: list[FlagRow]) -> None:
    s.add_all(BoundaryFlag(sweep_id=sweep_id, stage_id=stage_id, param=f.param, value=f.value,
                           low=f.low, high=f.high, side=f.side, at_limit=f.at_limit,
                           scale=f.scale, hard_limit=f.limit, reason=f.reason or None)
              for f in flags)


def flags_of(s: Session, sweep_id: int) -> list[tuple[int, FlagRow]]:
    """(stage idx, flag) for every flag of the sweep, in stage order."""
    rows = s.execute(select(Stage.idx, BoundaryFlag).join(Stage, Stage.id == BoundaryFlag.stage_id)
                     .where(BoundaryFlag.sweep_id == sweep_id)
                     .order_by(Stage.idx, BoundaryFlag.param))
    reasons = flag_reasons(s, sweep_id)
    return [(idx, FlagRow(f.param, f.value, f.low, f.high, f.side, f.at_limit, f.scale,
                          f.hard_limit or "", reasons.get(f.id, "")))
            for idx, f in rows]


def flag_reasons(s: Session, sweep_id: int) -> dict[int, str]:
    """``boundary_flags.reason`` by flag id."""
    return {i: r or "" for i, r in s.execute(select(BoundaryFlag.id, BoundaryFlag.reason)
                                             .where(BoundaryFlag.sweep_id == sweep_id))}


def dataset_size(s: Session, sha: str) -> tuple[int, int] | None:
    """(n_rows, n_classes) of a stored dataset, without reading its bytes."""
    row = s.execute(select(Dataset.n_rows, Dataset.n_classes)
                    .where(Dataset.sha256 == sha)).first()
    return (int(row[0]), int(row[1])) if row else None


def mark_chance(s: Session, stage_id: int, at_chance: bool, chance_acc: float) -> None:
    """Record whether any trial of the stage beat chance (``stages.at_chance``)."""
    s.execute(update(Stage).where(Stage.id == stage_id)
              .values(at_chance=at_chance, chance_acc=chance_acc))


def chance_of(s: Session, sweep_id: int) -> tuple[bool, float] | None:
    """(at chance, chance_acc) of the sweep's latest ranked search stage, or None."""
    row = s.execute(select(Stage.at_chance, Stage.chance_acc)
                    .where(Stage.sweep_id == sweep_id, Stage.at_chance.is_not(None),
                           Stage.kind == StageKind.SEARCH.value)
                    .order_by(Stage.idx.desc()).limit(1)).first()
    return (bool(row[0]), float(row[1])) if row else None
