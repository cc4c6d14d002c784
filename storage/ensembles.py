"""Ensembles: one row per evaluated ensemble, beside the best single model's accuracy.

Helpers take a ``Session`` first and never commit (see ``storage.db.transact``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Ensemble


@dataclass(frozen=True)
class EnsembleRow:
    id: int
    sweep_id: int
    method: str
    members: list[dict[str, Any]]
    val_acc: float | None
    test_acc: float | None
    single_val_acc: float | None
    single_test_acc: float | None


def add_ensemble(s: Session, sweep_id: int, method: str, members: list[dict[str, Any]], *,
                 val_acc: float, test_acc: float, single_val_acc: float,
                 single_test_acc: float) -> int:
    """Record one evaluated ensemble; ``members`` is stored as JSON. Returns the row id."""
    row = Ensemble(sweep_id=sweep_id, method=method, members=json.dumps(members),
                   val_acc=val_acc, test_acc=test_acc, single_val_acc=single_val_acc,
                   single_test_acc=single_test_acc)
    s.add(row)
    s.flush()
    return row.id


def ensembles_of(s: Session, sweep_id: int) -> list[EnsembleRow]:
    rows = s.scalars(select(Ensemble).where(Ensemble.sweep_id == sweep_id).order_by(Ensemble.id))
    return [EnsembleRow(r.id, r.sweep_id, r.method, json.loads(r.members), r.val_acc, r.test_acc,
                        r.single_val_acc, r.single_test_acc) for r in rows]
