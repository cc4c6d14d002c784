"""What happened over time: per-epoch curves and the order trials finished in.

Read-only helpers for plots and exports; they take a ``Session`` first.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import FINAL_TRIAL_STATUSES, Curve, Trial


@dataclass(frozen=True)
class CurvePoint:
    epoch: int
    train_loss: float | None
    train_acc: float | None
    val_loss: float | None
    val_acc: float | None
    lr: float


def curves_of(s: Session, trial_ids: list[int]) -> dict[int, list[CurvePoint]]:
    """trial id -> its curve rows in epoch order (an empty list for a trial without any)."""
    out: dict[int, list[CurvePoint]] = {t: [] for t in trial_ids}
    if not trial_ids:
        return out
    rows = s.scalars(select(Curve).where(Curve.trial_id.in_(trial_ids))
                     .order_by(Curve.trial_id, Curve.epoch))
    for r in rows:
        out[r.trial_id].append(CurvePoint(r.epoch, r.train_loss, r.train_acc, r.val_loss,
                                          r.val_acc, r.lr))
    return out


def finish_order(s: Session, sweep_id: int) -> list[int]:
    """Ids of the sweep's finished trials in the order they finished (ties by id)."""
    return list(s.scalars(select(Trial.id)
                          .where(Trial.sweep_id == sweep_id,
                                 Trial.status.in_(FINAL_TRIAL_STATUSES))
                          .order_by(Trial.finished_at, Trial.id)))
