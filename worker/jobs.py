"""RQ entry points of the worker program: ids in, a status string out.

Jobs carry a trial id and the fingerprint of their database. The database URL,
the worker's name and lease length come from the worker process's environment
(set by ``hpsweep worker``), read here and in the CLI only. Engines and the
dataset cache live for the whole worker process, so a trial costs no reconnect
and no dataset decode.

A job of another database never gets here: the worker hands it back and stops
(``worker.process``). A job without a fingerprint (enqueued by a version before
fingerprints, or forged) is refused with ``PermissionError``: RQ records it as
failed, the worker carries on, and the reconciler of the job's own database
(any of its workers, or ``hpsweep resume``) enqueues the still ``queued`` trial
again, this time with its fingerprint. Nothing is lost and nothing loops.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from rq import get_current_job
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from storage import meta, transitions
from storage import sweeps as sweep_store
from storage import trials as trial_store
from storage.db import make_engine, transact
from worker import models
from worker import queue as q
from worker.dataset_cache import DatasetCache
from worker.defaults import DEFAULT_DB
from worker.lease import LeaseKeeper
from worker.trainer import TrialContext, run_attempt

log = logging.getLogger("hpsweep.worker")

DEFAULT_LEASE_SECONDS = 30.0


@dataclass
class Runtime:
    """Per-process state shared by every job this worker process runs."""

    db_url: str
    worker: str
    lease_seconds: float
    datasets: DatasetCache
    stop_requested: bool = False
    sweeps: dict[int, sweep_store.SweepInfo] = field(default_factory=dict)  # see TrialContext
    _engine: Engine | None = field(default=None, repr=False)

    _keeper: LeaseKeeper | None = field(default=None, repr=False)
    models: frozenset[str] | None = None  # the models this worker offers (None: all installed)
    sweep_models: dict[int, str] = field(default_factory=dict)  # sweep id -> its model

    @property
    def engine(self) -> Engine:
        """The worker's database. A worker never creates one (``DatabaseNotFound`` when the
        URL names no hpsweep database); it upgrades an old one's schema (storage.schema)."""
        if self._engine is None:
            # every unit of work of a worker runs in ``transact``, which retries a
            # dropped connection: no ping round trip before each (``storage.db``)
            self._engine = make_engine(self.db_url, create=False, pre_ping=False)
        return self._engine

    @property
    def identity(self) -> meta.DatabaseIdentity:
        return meta.identity(self.engine)

    @property
    def keeper(self) -> LeaseKeeper:
        if self._keeper is None:
            self._keeper = LeaseKeeper(self.engine, self.lease_seconds)
        return self._keeper


_runtime: Runtime | None = None


def default_worker_name() -> str:
    """host-pid-xxxx: unique even when a restarted container reuses host and pid.

    RQ refuses a name whose registration is still alive (up to minutes after a
    SIGKILL), so the suffix keeps a restarted worker from being turned away.
    """
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


def runtime() -> Runtime:
    """The process's runtime, built once from the environment."""
    global _runtime
    if _runtime is None or _runtime.db_url != os.environ.get("HPSWEEP_DB", DEFAULT_DB):
        cache_dir = os.environ.get("HPSWEEP_CACHE")
        _runtime = Runtime(
            db_url=os.environ.get("HPSWEEP_DB", DEFAULT_DB),
            worker=os.environ.get("HPSWEEP_WORKER_NAME") or default_worker_name(),
            lease_seconds=float(os.environ.get("HPSWEEP_LEASE_SECONDS", DEFAULT_LEASE_SECONDS)),
            datasets=DatasetCache(Path(cache_dir) if cache_dir else None),
            models=models.parse_offered(os.environ.get("HPSWEEP_MODELS")),
        )
    return _runtime


def check_origin(fingerprint: str | None, database: str | None) -> None:
    """Refuse a job that does not name this worker's database (see the module's doc)."""
    own = runtime().identity
    if not q.is_fingerprint(fingerprint):
        raise PermissionError("job carries no valid database fingerprint (enqueued by an "
                              "older hpsweep, or forged): refused; its own database's "
                              "reconciler enqueues the trial again")
    if fingerprint != own.fingerprint:
        raise PermissionError(f"job belongs to database {database!r} (fingerprint "
                              f"{fingerprint}), not to this worker's {own.description} "
                              f"(fingerprint {own.fingerprint})")


def run_trial(trial_id: int, fingerprint: str | None = None, database: str | None = None) -> str:
    """Train one trial to a final status; advance its stage if it was the last.

    ``fingerprint`` and ``database`` name the database the trial belongs to.
    """
    if isinstance(trial_id, bool) or not isinstance(trial_id, int):
        raise TypeError(f"run_trial takes an integer trial id, got {trial_id!r}")
    check_origin(fingerprint, database)
    rt = runtime()
    engine = rt.engine
    ctx = TrialContext(engine=engine, worker=rt.worker, lease_seconds=rt.lease_seconds,
                       datasets=rt.datasets, stop_requested=lambda: rt.stop_requested,
                       sweeps=rt.sweeps, keeper=rt.keeper, models=rt.models)
    log.info("trial %d: start", trial_id)
    outcome = run_attempt(ctx, trial_id)
    if outcome.status == "noop" and not transact(
            engine, lambda s: trial_store.trial_exists(s, trial_id)):
        raise LookupError(f"unknown trial {trial_id}: nothing to run")
    log.info("trial %d: %s after %d epoch(s) in this attempt", trial_id, outcome.status,
             outcome.epochs_run)
    if outcome.stage_id is not None and outcome.status not in ("noop", "released"):
        request_advance_if_finished(engine, outcome.stage_id, outcome.stage_ready)
    return outcome.status


def missing_model(trial_id: int) -> models.ModelUnavailable | None:
    """Why this worker cannot train ``trial_id``'s model (not installed, not offered, not
    loading), or None: it can, or the trial is unknown (the job function says so)."""
    rt = runtime()

    def sweep_of(c: Connection) -> int | None:
        return sweep_store.sweep_of_trial(c, trial_id)

    def model_of(s: Session, sweep_id: int) -> str:
        info = sweep_store.get_sweep(s, sweep_id)
        return models.model_name(info.config if info else {})

    sweep_id = transact(rt.engine, sweep_of, core=True)  # the common case: one short read
    if sweep_id is None:
        return None
    if sweep_id not in rt.sweep_models:
        rt.sweep_models[sweep_id] = transact(rt.engine, lambda s: model_of(s, sweep_id))
    name = rt.sweep_models[sweep_id]
    try:
        models.check_offered(name, rt.models)
    except models.ModelUnavailable as exc:
        return exc
    return None


def request_advance_if_finished(engine: Engine, stage_id: int,
                                ready: bool | None = None) -> None:
    """Enqueue the stage's advancement once its quorum (or all its trials) finished.

    ``ready``: already checked as the trial finished (None: ask the database now).
    """
    if ready is None:
        ready = transact(engine, lambda s: transitions.stage_is_ready(s, stage_id))
    if not ready:
        return
    job = get_current_job()
    if job is None:
        return
    q.enqueue_advance(q.make_queue(job.connection, job.origin), stage_id, meta.identity(engine))
