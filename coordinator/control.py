"""Driving a sweep from outside the workers: resume and cancel (the database first,
then the queue)."""

from __future__ import annotations

from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator.launch import finish_launch
from coordinator.retention import apply_retention
from coordinator.stages import advance
from storage import launching as launching_store
from storage import repair as repair_store
from storage import sweeps as sweep_store
from storage import transitions
from storage.db import transact
from storage.models import SweepStatus
from worker import queue as q
from worker.reconcile import Reconciled, reconcile


def resume_sweep(engine: Engine, conn: Redis, sweep_id: int) -> Reconciled:
    """Repair the sweep from the database: reap lost trials, do the transitions whose
    trigger was lost (close, finish, and plan a due stage here, not in a job), and
    enqueue every queued trial Redis does not hold. Idempotent.

    First, a launch that died while writing stage 0 is completed (``finish_launch``)."""
    for stage_id in transact(engine, lambda s: launching_store.launching_stages(s, sweep_id)):
        finish_launch(engine, stage_id)
    done = reconcile(engine, conn, sweep_id, advance=lambda stage_id: advance(engine, stage_id))
    apply_retention(engine, sweep_id)  # stages the repair closed
    return done


def cancel_sweep(engine: Engine, conn: Redis | None, sweep_id: int) -> int:
    """Cancel a sweep; returns how many queued trials were dropped.

    The sweep's status changes first, so no worker claims another of its
    trials (claims require a running sweep) and the reaper never revives one;
    running trials see the status at their next epoch boundary.
    """
    def work(s: Session) -> tuple[list[int], str]:
        # the transition lock first: an advancement planning the next stage right now
        # commits before this reads the trials to cancel (or sees the sweep cancelled)
        transitions.lock_sweep(s, sweep_id)
        sweep = sweep_store.get_sweep(s, sweep_id)
        assert sweep is not None
        transitions.finish_sweep(s, sweep_id, SweepStatus.CANCELLED.value)
        dropped = transitions.cancel_unfinished(s, sweep_id)
        # a stage whose last open trials were just dropped is over: close it now
        repair_store.close_finished_stages(s, sweep_id)
        return dropped, sweep.queue

    ids, queue_name = transact(engine, work)
    if conn is not None and ids:
        q.remove_jobs(conn, q.make_queue(conn, queue_name), [q.trial_job_id(t) for t in ids])
    return len(ids)
