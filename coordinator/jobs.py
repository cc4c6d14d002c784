"""RQ entry points of the coordinator side, run by any worker program.

``advance_stage`` is enqueued (by its dotted path, so ``worker`` never imports
``coordinator``) when a stage's last trial finishes, and by the reconciler.
"""

from __future__ import annotations

import logging

from rq import get_current_job
from sqlalchemy import Engine

from coordinator.retention import apply_retention_of_stage
from coordinator.stages import advance
from storage import sweeps as sweep_store
from storage.db import transact
from storage.models import StageStatus
from worker import queue as q
from worker.jobs import check_origin, runtime

log = logging.getLogger("hpsweep.worker")


def advance_stage(stage_id: int, fingerprint: str | None = None,
                  database: str | None = None) -> str:
    """Close stage ``stage_id`` and enqueue the next one's trials (exactly once).

    ``fingerprint`` and ``database`` name the database the stage belongs to.
    """
    if isinstance(stage_id, bool) or not isinstance(stage_id, int):
        raise TypeError(f"advance_stage takes an integer stage id, got {stage_id!r}")
    check_origin(fingerprint, database)
    rt = runtime()
    done = advance(rt.engine, stage_id)
    if done is None:
        # a straggler's finish closed the stage (after its advancement, or the last
        # stage's): its checkpoints are cleaned now, not by the next `hpsweep gc`
        if stage_closed(rt.engine, stage_id):
            apply_retention_of_stage(rt.engine, stage_id)
            return "cleaned"
        return "noop"
    if done.sweep_done:
        log.info("stage %d finished the sweep", stage_id)
        apply_retention_of_stage(rt.engine, stage_id)
        return "sweep done"
    job = get_current_job()
    if job is not None:
        q.enqueue_trials(q.make_queue(job.connection, done.queue), list(done.trial_ids),
                         rt.identity)
    log.info("stage %d advanced: stage %s with %d trial(s)", stage_id, done.next_stage_id,
             len(done.trial_ids))
    # after the commit that carried the best trials on and after enqueueing the next
    # stage (its workers need not wait for the cleanup)
    apply_retention_of_stage(rt.engine, stage_id)
    return "advanced"


def stage_closed(engine: Engine, stage_id: int) -> bool:
    stage = transact(engine, lambda s: sweep_store.get_stage(s, stage_id))
    return stage is not None and stage.status == StageStatus.DONE.value
