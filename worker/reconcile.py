"""Reconciliation: make Redis carry what the database says is unfinished.

Run periodically by every worker program (and ``hpsweep run``'s supervisor),
and once by ``hpsweep resume``. Idempotent: running it on a healthy sweep
changes nothing. It takes back trials whose lease expired (by the database's
clock), re-enqueues queued trials that Redis no longer holds, and re-requests
the advancement of stages whose trials have all finished.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis import Redis
from sqlalchemy import Engine

from storage import sweeps as sweep_store
from storage import trials as trial_store
from storage.db import transact
from storage.meta import identity
from worker import queue as q

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reconciled:
    reaped: tuple[int, ...] = ()
    exhausted: tuple[int, ...] = ()
    requeued: tuple[int, ...] = ()
    advanced: tuple[int, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.reaped or self.exhausted or self.requeued or self.advanced)


def reconcile(engine: Engine, conn: Redis, sweep_id: int | None = None) -> Reconciled:
    """One pass; returns what it did."""
    origin = identity(engine)
    reaped, exhausted = transact(engine, lambda s: trial_store.reap_expired(s, engine))
    queued = transact(engine, lambda s: trial_store.queued_trials(s, sweep_id))
    live = q.live_job_ids(conn, [q.trial_job_id(t) for t, _ in queued])
    missing: dict[str, list[int]] = {}
    for tid, queue_name in queued:
        if q.trial_job_id(tid) not in live:
            missing.setdefault(queue_name, []).append(tid)
    for queue_name, ids in missing.items():
        q.enqueue_trials(q.make_queue(conn, queue_name), ids, origin)
    ready = transact(engine, lambda s: sweep_store.stages_ready_to_advance(s, sweep_id))
    live_adv = q.live_job_ids(conn, [q.advance_job_id(sid) for sid, _ in ready])
    advanced = [sid for sid, _ in ready if q.advance_job_id(sid) not in live_adv]
    for stage_id, queue_name in ready:
        if stage_id in advanced:
            q.enqueue_advance(q.make_queue(conn, queue_name), stage_id, origin)
    result = Reconciled(tuple(reaped), tuple(exhausted),
                        tuple(t for ids in missing.values() for t in ids), tuple(advanced))
    if result.changed:
        log.info("reconcile: reaped %s, failed %s, re-enqueued %s, advancing stages %s",
                 list(result.reaped), list(result.exhausted), list(result.requeued),
                 list(result.advanced))
    return result
