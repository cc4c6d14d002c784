"""Reconciliation: make Redis carry what the database says is unfinished.

Run periodically by every worker program (and ``hpsweep run``'s supervisor),
and once by ``hpsweep resume``. Idempotent: running it on a healthy sweep
changes nothing. It takes back trials whose lease expired (by the database's
clock), does the storage-level transitions whose trigger was lost (closes a
stage whose trials have all finished, finishes a sweep whose stages are all
done: ``storage.repair``), enqueues the queued trials Redis does not hold among
each sweep's first ``ENQUEUE_WINDOW`` (lost jobs, and the window moving on through
a big stage), and re-requests the advancement of stages whose quorum has finished.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis
from sqlalchemy import Engine

from storage import attempts, transitions
from storage import repair as repair_store
from storage import trials as trial_store
from storage.db import transact
from storage.meta import identity
from worker import queue as q
from worker.defaults import ENQUEUE_WINDOW

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reconciled:
    reaped: tuple[int, ...] = ()
    exhausted: tuple[int, ...] = ()
    requeued: tuple[int, ...] = ()
    advanced: tuple[int, ...] = ()
    closed: tuple[int, ...] = ()  # stages closed here
    finished: tuple[int, ...] = ()  # sweeps finished here
    cancelled: tuple[int, ...] = ()  # leftover queued trials of cancelled sweeps

    @property
    def changed(self) -> bool:
        return bool(self.reaped or self.exhausted or self.requeued or self.advanced
                    or self.repaired)

    @property
    def repaired(self) -> bool:
        return bool(self.closed or self.finished or self.cancelled)


def repair(engine: Engine, sweep_id: int | None = None) -> list[repair_store.Repaired]:
    """The due storage-level transitions, one transaction (and sweep lock) per sweep."""
    due = transact(engine, lambda s: repair_store.sweeps_to_repair(s, sweep_id))
    return [transact(engine, lambda s, sid=sid: repair_store.repair_sweep(s, sid))
            for sid in due]


def reconcile(engine: Engine, conn: Redis, sweep_id: int | None = None,
              advance: Callable[[int], object] | None = None) -> Reconciled:
    """One pass; returns what it did.

    ``advance``: advance a due stage in this process (``hpsweep resume`` passes the
    coordinator's); without it an advancement job is enqueued for some worker.
    """
    reaped, exhausted = transact(engine, lambda s: attempts.reap_expired(s, engine))
    repaired = repair(engine, sweep_id)
    advanced = _advance_due(engine, conn, sweep_id, advance)
    requeued = _requeue_missing(engine, conn, sweep_id)  # a stage planned just now too
    result = Reconciled(tuple(reaped), tuple(exhausted), tuple(requeued), tuple(advanced),
                        closed=tuple(st for r in repaired for st in r.closed),
                        finished=tuple(r.sweep_id for r in repaired if r.finished),
                        cancelled=tuple(t for r in repaired for t in r.cancelled))
    if result.changed:
        log.info("reconcile: reaped %s, failed %s, re-enqueued %s, advancing stages %s",
                 list(result.reaped), list(result.exhausted), list(result.requeued),
                 list(result.advanced))
    if result.repaired:
        log.warning("reconcile: repaired lost transitions: closed stages %s, finished "
                    "sweeps %s, cancelled leftover trials %s", list(result.closed),
                    list(result.finished), list(result.cancelled))
    return result


def _requeue_missing(engine: Engine, conn: Redis, sweep_id: int | None) -> list[int]:
    """Enqueue the queued trials Redis does not hold, of each sweep's first
    ``ENQUEUE_WINDOW`` queued trials (the window moves on as trials run); returns their
    ids.

    A trial missing from Redis is read again before it is enqueued: between the first
    read and Redis's answer a busy fleet dequeues, runs and finishes many trials, whose
    jobs RQ then no longer holds; enqueueing those again made ~0.8 duplicate jobs per
    trial at 128 zero-work workers (``benchmarks/coordination.py``).
    """
    queued = transact(engine, lambda s: trial_store.queued_trials(s, sweep_id,
                                                                  ENQUEUE_WINDOW))
    live = q.live_job_ids(conn, [q.trial_job_id(t) for t, _ in queued])
    absent = [(tid, queue_name) for tid, queue_name in queued
              if q.trial_job_id(tid) not in live]
    if not absent:
        return []
    still = transact(engine, lambda s: trial_store.still_queued(s, [t for t, _ in absent]))
    missing: dict[str, list[int]] = {}
    for tid, queue_name in absent:
        if tid in still:
            missing.setdefault(queue_name, []).append(tid)
    for queue_name, ids in missing.items():
        q.enqueue_trials(q.make_queue(conn, queue_name), ids, identity(engine))
    return [t for ids in missing.values() for t in ids]


def _advance_due(engine: Engine, conn: Redis, sweep_id: int | None,
                 advance: Callable[[int], object] | None) -> list[int]:
    """Advance (or ask a worker to advance) the stages whose quorum finished; returns
    their ids (those whose advancement job Redis already holds are left to it)."""
    ready = transact(engine, lambda s: transitions.stages_ready_to_advance(s, sweep_id))
    live_adv = q.live_job_ids(conn, [q.advance_job_id(sid) for sid, _ in ready])
    advanced = [sid for sid, _ in ready
                if advance is not None or q.advance_job_id(sid) not in live_adv]
    for stage_id, queue_name in ready:
        if stage_id not in advanced:
            continue
        if advance is not None:
            advance(stage_id)
        else:
            q.enqueue_advance(q.make_queue(conn, queue_name), stage_id, identity(engine))
    return advanced
