"""Sweeps, stages, their ranges and boundary flags, and datasets.

Helpers take a ``Session`` first and never commit: callers frame the unit of
work (``storage.db.transact``). Callers get frozen dataclasses, not ORM rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from storage import bulk
from storage.db import bind_of, cached_statement
from storage.models import (
    FINAL_TRIAL_STATUSES,
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


def unfinished_trial_count(s: Session, stage_id: int) -> int:
    return s.scalar(select(func.count()).select_from(Trial).where(
        Trial.stage_id == stage_id, Trial.status.not_in(FINAL_TRIAL_STATUSES))) or 0


def _open_trials(stage_id: Any, below: Any = None):  # type: ignore[no-untyped-def]
    """EXISTS a non-final trial of the stage (with ``idx < below`` when given).

    Core columns, so that ``stage_is_ready`` stays a cheap Core query after every trial."""
    t = Trial.__table__.c
    cond = [t.stage_id == stage_id, t.status.not_in(FINAL_TRIAL_STATUSES)]
    if below is not None:
        cond.append(t.idx < below)
    return select(t.id).where(*cond).exists()


def _lock_statement(key: Any):  # type: ignore[no-untyped-def]
    """SELECT the sweep row (id = ``key``) FOR NO KEY UPDATE: it excludes the other
    transitions of the sweep, not the inserts of rows that reference it (those take KEY
    SHARE locks). SQLite compiles it to a plain SELECT: its BEGIN IMMEDIATE write
    transactions are serialised already."""
    sw = Sweep.__table__.c
    return select(sw.id, sw.status).where(sw.id == key).with_for_update(key_share=True)


def lock_sweep(s: Session, sweep_id: int) -> str | None:
    """Take the sweep's transition lock until the transaction ends; returns the sweep's
    status read under it (None: no such sweep).

    Every state transition of a sweep (plan or close a stage, finish or cancel the
    sweep, a trial's finish deciding that its stage is due) takes it first, BEFORE
    reading what the transition depends on: under READ COMMITTED each later statement
    then sees what the previous holder committed, so no interleaving skips a transition
    (two stages closing at once each saw the other one open: the sweep never finished).
    Lock order: the sweep row first, then stage rows. No transition waits on a running
    trial's row, so a finishing trial may take this lock after updating its own row.
    A trial's per-epoch writes never take it.
    """
    row = s.execute(cached_statement(bind_of(s), "sweep-lock", lambda: _lock_statement(
        bindparam("p_sweep"))), {"p_sweep": sweep_id}).first()
    return None if row is None else row[1]


def lock_sweep_of_stage(s: Session, stage_id: int) -> int | None:
    """``lock_sweep`` on the sweep of ``stage_id``; returns the sweep's id (None: no such
    stage)."""
    def build():  # type: ignore[no-untyped-def]
        st = Stage.__table__.c
        return _lock_statement(select(st.sweep_id).where(st.id == bindparam("p_stage"))
                               .scalar_subquery())

    row = s.execute(cached_statement(bind_of(s), "sweep-lock-of-stage", build),
                    {"p_stage": stage_id}).first()
    return None if row is None else row[0]


def claim_stage_advance(s: Session, stage_id: int) -> bool:
    """Compare-and-set running -> advanced once the stage's quorum has finished.

    True for exactly one caller: that caller plans the next stage (or, on the
    last stage, whose quorum is all its trials, records the final flags).
    """
    res = s.execute(update(Stage).where(Stage.id == stage_id,
                                        Stage.status == StageStatus.RUNNING.value,
                                        ~_open_trials(Stage.id, Stage.quorum))
                    .values(status=StageStatus.ADVANCED.value))
    return res.rowcount == 1


def close_stage(s: Session, stage_id: int) -> bool:
    """Compare-and-set advanced -> done once every trial of the stage has finished."""
    def build():  # type: ignore[no-untyped-def]
        st = Stage.__table__.c
        return (update(Stage.__table__)
                .where(st.id == bindparam("p_stage"), st.status == StageStatus.ADVANCED.value,
                       ~_open_trials(st.id))
                .values(status=StageStatus.DONE.value, finished_at=func.now()))

    res = s.execute(cached_statement(bind_of(s), "stage-close", build), {"p_stage": stage_id})
    return res.rowcount == 1


def search_stages_done():  # type: ignore[no-untyped-def]
    """SQL: every search stage of the sweep (``sweeps`` row in the outer query) is done."""
    done = (select(func.count()).select_from(Stage)
            .where(Stage.sweep_id == Sweep.id, Stage.kind == StageKind.SEARCH.value,
                   Stage.status == StageStatus.DONE.value)
            .correlate(Sweep).scalar_subquery())
    return done >= Sweep.n_stages


def finish_if_stages_done(s: Session, sweep_id: int) -> bool:
    """Compare-and-set running -> done once every search stage of the sweep is done.

    Call it holding ``lock_sweep``: a stage closed by a concurrent transaction is then
    committed, and seen, before this reads the stages."""
    def build():  # type: ignore[no-untyped-def]
        return (update(Sweep).where(Sweep.id == bindparam("p_sweep"),
                                    Sweep.status == SweepStatus.RUNNING.value,
                                    search_stages_done())
                .values(status=SweepStatus.DONE.value, finished_at=func.now()))

    res = s.execute(cached_statement(bind_of(s), "sweep-finish", build), {"p_sweep": sweep_id})
    return res.rowcount == 1


def stage_closable():  # type: ignore[no-untyped-def]
    """SQL: an advanced stage whose trials have all finished (``close_stage`` is due)."""
    st = Stage.__table__.c
    return and_(st.status == StageStatus.ADVANCED.value, ~_open_trials(st.id))


def _ready():  # type: ignore[no-untyped-def]
    """A stage whose quorum finished (to advance) or whose trials all did (to close)."""
    st = Stage.__table__.c
    return or_(and_(st.status == StageStatus.RUNNING.value, ~_open_trials(st.id, st.quorum)),
               stage_closable())


def settle_stage(s: Session, stage_id: int) -> bool:
    """In the transaction that just ended one of the stage's trials: under the sweep's
    transition lock, close the stage if that was its last open trial (and finish the
    sweep if every stage is then done), in this same commit. Returns whether the
    coordinator has work on the stage (its ``advance-`` job is due): planning the next
    stage, or — the stage just closed — cleaning its checkpoints (retention).

    Of two trials ending at once the later one waits for the lock and sees the earlier
    one's final status, so no due transition goes unnoticed."""
    sweep_id = lock_sweep_of_stage(s, stage_id)
    if sweep_id is None:
        return False
    if close_stage(s, stage_id):
        finish_if_stages_done(s, sweep_id)
        return True
    return stage_is_ready(s, stage_id)


def stage_is_ready(s: Session, stage_id: int) -> bool:
    """Whether the stage's advancement (or closing) is due."""
    st, bind = Stage.__table__.c, bind_of(s)
    stmt = cached_statement(bind, "stage-ready", lambda: select(st.id).where(
        st.id == bindparam("p_stage"), _ready()))
    return s.execute(stmt, {"p_stage": stage_id}).first() is not None


def stages_ready_to_advance(s: Session, sweep_id: int | None = None) -> list[tuple[int, str]]:
    """(stage id, queue) of stages of running sweeps (or 'seeds' stages, which run after
    their sweep ended) with an advancement or closing due."""
    q = (select(Stage.id, Sweep.queue).join(Sweep, Sweep.id == Stage.sweep_id)
         .where(or_(Sweep.status == SweepStatus.RUNNING.value,
                    Stage.kind == StageKind.SEEDS.value), _ready()))
    if sweep_id is not None:
        q = q.where(Sweep.id == sweep_id)
    return [(sid, qn) for sid, qn in s.execute(q)]


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


def finish_sweep(s: Session, sweep_id: int, status: str = SweepStatus.DONE.value) -> bool:
    res = s.execute(update(Sweep).where(Sweep.id == sweep_id,
                                        Sweep.status == SweepStatus.RUNNING.value)
                    .values(status=status, finished_at=func.now()))
    return res.rowcount == 1


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


def reopen_sweep(s: Session, sweep_id: int, was: str, config: dict[str, Any],
                 n_stages: int) -> bool:
    """Compare-and-set a finished or cancelled sweep (status ``was``) back to running with
    a longer ``config``; closes its search stages (their trials are all final)."""
    res = s.execute(update(Sweep).where(Sweep.id == sweep_id, Sweep.status == was)
                    .values(status=SweepStatus.RUNNING.value, finished_at=None,
                            config=json.dumps(config), n_stages=n_stages))
    if res.rowcount != 1:
        return False
    s.execute(update(Stage).where(Stage.sweep_id == sweep_id,
                                  Stage.kind == StageKind.SEARCH.value,
                                  Stage.status != StageStatus.DONE.value)
              .values(status=StageStatus.DONE.value, finished_at=func.now()))
    return True
