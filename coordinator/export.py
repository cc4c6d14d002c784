"""``hpsweep export``: one row per trial, its parameters as columns, as CSV or JSON.

Columns: the trial's summary (``id, stage, status, epochs, best_val_acc,
best_epoch``), then the searched parameters, then the fixed ones (each by its
config name). Formatting reuses ``hpsweep query``'s CSV and JSON writers.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator.query import FORMATTERS, Rows
from storage import sweeps as sweep_store
from storage import trials as trial_store
from storage.db import transact

SUMMARY = ("id", "stage", "status", "epochs", "best_val_acc", "best_epoch")
FORMATS = ("csv", "json")


def param_columns(searched: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """Searched parameters (in the stored config's order), then every other one, sorted."""
    others = sorted({k for r in rows for k in r} - set(searched))
    return [*searched, *others]


def _cell(value: Any) -> Any:
    """Integral floats as ints (hidden_size 64, not 64.0); lists as JSON text."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return json.dumps(value)
    return value


def trial_table(engine: Engine, sweep_id: int) -> Rows:
    """Every trial of the sweep (search and seeds stages), in id order."""
    def work(s: Session) -> Rows:
        sweep = sweep_store.get_sweep(s, sweep_id)
        assert sweep is not None
        trials = trial_store.trials_of(s, sweep_id)
        params = param_columns(list(sweep.config.get("space", {})), [t.params for t in trials])
        body = [(t.id, t.stage_idx, t.status, t.epochs, t.best_val_acc, t.best_epoch,
                 *(_cell(t.params.get(p)) for p in params)) for t in trials]
        return Rows([*SUMMARY, *params], body)

    return transact(engine, work)


def export_text(engine: Engine, sweep_id: int, fmt: str) -> str:
    """The sweep's trials in ``fmt`` (csv or json)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return FORMATTERS[fmt](trial_table(engine, sweep_id))
