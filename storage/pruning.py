"""What a stage's ``prune`` rule reads: where a trial sits, and its stage's curves at one epoch.

Read-only helpers (a ``Session`` first, nothing committed); the rule itself lives in
``worker.prune``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, bindparam, select
from sqlalchemy.orm import Session

from storage.db import bind_of, cached_statement
from storage.models import Curve, Stage, Trial

_TRIALS, _CURVES, _STAGES = Trial.__table__, Curve.__table__, Stage.__table__


@dataclass(frozen=True)
class Place:
    """Where a trial sits: its stage (id, idx, kind) and its own index in the stage."""

    stage_id: int
    stage_idx: int
    stage_kind: str
    idx: int


@dataclass(frozen=True)
class PeerAt:
    """One trial of a stage as seen at one epoch: its status now, and its curve row of that
    epoch if it has one (``has_row``; metrics None when that epoch diverged)."""

    idx: int
    status: str
    has_row: bool
    val_acc: float | None = None
    val_loss: float | None = None
    ema_val_acc: float | None = None
    ema_val_loss: float | None = None
    seconds: float | None = None


def place_of(s: Session, trial_id: int) -> Place | None:
    t, st = _TRIALS.c, _STAGES.c
    row = s.execute(select(t.stage_id, st.idx, st.kind, t.idx)
                    .join_from(_TRIALS, _STAGES, st.id == t.stage_id)
                    .where(t.id == trial_id)).first()
    return Place(*row) if row else None


def stage_at_epoch(s: Session, stage_id: int, upto_idx: int, epoch: int) -> list[PeerAt]:
    """The stage's trials with ``idx <= upto_idx``, in index order, each with its status and
    its curve row of ``epoch`` (one statement, one snapshot: a status and a row read
    together never disagree)."""
    def build() -> Select[Any]:
        t, c = _TRIALS.c, _CURVES.c
        return (select(t.idx, t.status, c.epoch, c.val_acc, c.val_loss, c.ema_val_acc,
                       c.ema_val_loss, c.seconds)
                .join_from(_TRIALS, _CURVES, and_(c.trial_id == t.id,
                                                  c.epoch == bindparam("p_epoch")),
                           isouter=True)
                .where(t.stage_id == bindparam("p_stage"), t.idx <= bindparam("p_upto"))
                .order_by(t.idx))

    rows = s.execute(cached_statement(bind_of(s), "stage-at-epoch", build),
                     {"p_stage": stage_id, "p_upto": upto_idx, "p_epoch": epoch})
    return [PeerAt(r[0], r[1], r[2] is not None, *r[3:]) for r in rows]
