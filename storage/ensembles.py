"""Ensembles: one row per evaluated ensemble, beside the best single model's accuracy.

Helpers take a ``Session`` first and never commit (see ``storage.db.transact``).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from storage.models import Ensemble


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
