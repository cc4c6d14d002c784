"""Continue a finished or cancelled sweep with one more stage.

The new stage is planned exactly as workers plan a next stage (``stages._plan_next``):
from the ranking of the sweep's last search stage, following its boundary flags (a
flagged range travels on), its ranges recorded in ``stage_ranges`` like any other.
The sweep goes back to ``running`` and finishes again when the new stage is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator.config import ConfigError, SweepConfig
from coordinator.launch import enqueue_or_defer
from coordinator.stages import _plan_next
from storage import sweeps as sweep_store
from storage import transitions
from storage import trials as trial_store
from storage.db import transact
from storage.meta import identity
from storage.models import StageKind, SweepStatus


class ExtendError(ValueError):
    """The sweep cannot be extended now; the message says why and what to do."""


@dataclass(frozen=True)
class Extended:
    sweep: str
    stage_idx: int
    trial_ids: tuple[int, ...]
    enqueued: bool


def extend_sweep(engine: Engine, conn: Redis | None, sweep_id: int,
                 trials: int | None = None, epochs: int | None = None) -> Extended:
    """Add one search stage of ``trials`` x ``epochs`` (default: the next stage the config
    planned, if the sweep was cancelled before it, else a copy of the last one)."""
    def work(s: Session) -> tuple[Extended, str]:
        sweep = sweep_store.get_sweep(s, sweep_id)
        assert sweep is not None
        last = _last_search_stage(s, sweep)
        config = _longer_config(sweep, last.idx, trials, epochs)
        if not transitions.reopen_sweep(s, sweep_id, sweep.status, config, last.idx + 2):
            raise ExtendError(f"sweep {sweep.name} changed while extending it; try again")
        reopened = sweep_store.get_sweep(s, sweep_id)
        assert reopened is not None
        planned = _plan_next(s, engine, last, reopened)
        return Extended(sweep.name, last.idx + 1, planned.trial_ids, False), planned.queue

    made, queue = transact(engine, work)
    ok = enqueue_or_defer(conn, queue, list(made.trial_ids), identity(engine))
    return Extended(made.sweep, made.stage_idx, made.trial_ids, ok)


def _last_search_stage(s: Session, sweep: sweep_store.SweepInfo) -> sweep_store.StageInfo:
    if sweep.status == SweepStatus.RUNNING.value:
        raise ExtendError(f"sweep {sweep.name} is still running: extend it once it is done "
                          f"(or `hpsweep cancel {sweep.name}` first)")
    open_trials = [t.id for t in trial_store.trials_of(s, sweep.id)
                   if not trial_store.is_final(t.status)]
    if open_trials:
        raise ExtendError(f"sweep {sweep.name} still has {len(open_trials)} unfinished "
                          "trial(s) (cancelled trials stop at their next epoch): wait for "
                          "them, then extend")
    search = [st for st in sweep_store.stages_of(s, sweep.id)
              if st.kind == StageKind.SEARCH.value]
    return search[-1]


def _longer_config(sweep: sweep_store.SweepInfo, last_idx: int, trials: int | None,
                   epochs: int | None) -> dict[str, Any]:
    """The stored config with one more stage after ``last_idx`` (later, never-run stages of
    a cancelled sweep are dropped), validated as at launch."""
    stages = [dict(st) for st in sweep.config["stages"]]
    template = stages[last_idx + 1] if last_idx + 1 < len(stages) else stages[last_idx]
    new = {"trials": trials or template["trials"], "epochs": epochs or template["epochs"]}
    kept = stages[: last_idx + 1]
    if new["epochs"] <= kept[-1]["epochs"]:  # a carried trial would have nothing to train
        kept[-1]["carry"] = 0
    kept[-1]["carry"] = min(kept[-1].get("carry", 0), new["trials"])
    config = dict(sweep.config, stages=[*kept, new])
    try:
        SweepConfig.from_dict(config)
    except ConfigError as exc:
        raise ExtendError(f"cannot extend sweep {sweep.name}: {exc}") from None
    return config
