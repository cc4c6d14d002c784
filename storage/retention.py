"""Checkpoint rows of trials that can no longer train, and the bytes a sweep stores.

The policy (which trials keep what) lives in ``coordinator.retention``; these are its
statements. Each change to one trial's rows is one short transaction of the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from storage.models import Checkpoint, Curve, Dataset, Stage, Sweep, Trial


@dataclass(frozen=True)
class StoredBytes:
    checkpoints: int
    curves: int
    dataset: int

    @property
    def total(self) -> int:
        return self.checkpoints + self.curves + self.dataset


def checkpoint_sizes(s: Session, trial_id: int) -> list[tuple[str, int, int]]:
    """(kind, epoch, bytes) of the trial's checkpoint rows (never the blobs)."""
    rows = s.execute(select(Checkpoint.kind, Checkpoint.epoch, func.length(Checkpoint.data))
                     .where(Checkpoint.trial_id == trial_id))
    return [(k, e, int(n or 0)) for k, e, n in rows]


def sweep_of_stage(s: Session, stage_id: int) -> int | None:
    return s.scalar(select(Stage.sweep_id).where(Stage.id == stage_id))


def checkpoint_blob(s: Session, trial_id: int, kind: str, epoch: int) -> bytes | None:
    return s.scalar(select(Checkpoint.data).where(
        Checkpoint.trial_id == trial_id, Checkpoint.kind == kind, Checkpoint.epoch == epoch))


def drop_checkpoints(s: Session, trial_id: int, kinds: tuple[str, ...]) -> None:
    if not kinds:
        return
    s.execute(delete(Checkpoint).where(Checkpoint.trial_id == trial_id,
                                       Checkpoint.kind.in_(kinds)))


def rewrite_checkpoint(s: Session, trial_id: int, kind: str, epoch: int, data: bytes) -> None:
    s.execute(update(Checkpoint).where(Checkpoint.trial_id == trial_id, Checkpoint.kind == kind,
                                       Checkpoint.epoch == epoch).values(data=data))


def stored_bytes(s: Session, sweep_id: int) -> StoredBytes:
    """Bytes of the sweep's checkpoints, curve rows (approximate: 8 bytes a value) and
    dataset blob (shared with any sweep of the same data)."""
    trials = select(Trial.id).where(Trial.sweep_id == sweep_id)
    ck = s.scalar(select(func.coalesce(func.sum(func.length(Checkpoint.data)), 0))
                  .where(Checkpoint.trial_id.in_(trials)))
    n_curves = s.scalar(select(func.count()).select_from(Curve)
                        .where(Curve.trial_id.in_(trials)))
    ds = s.scalar(select(func.coalesce(func.length(Dataset.data), 0))
                  .join(Sweep, Sweep.dataset_id == Dataset.id).where(Sweep.id == sweep_id))
    return StoredBytes(int(ck or 0), int(n_curves or 0) * 8 * len(Curve.__table__.columns),
                       int(ds or 0))


def sweep_ids(s: Session) -> list[int]:
    return list(s.scalars(select(Sweep.id).order_by(Sweep.id)))
