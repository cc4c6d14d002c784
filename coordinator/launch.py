"""Create a sweep in the database, then hand its first stage to Redis.

The database is written first, in one transaction (dataset blob, sweep,
stage 0 with its ranges, trials and params); only then are the jobs
enqueued. If Redis is down at that moment nothing is lost: the trials are
``queued`` in the database and any worker's reconciler enqueues them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator import datasets
from coordinator.config import SweepConfig
from coordinator.space import Choice, iter_configs
from storage import launching as launching_store
from storage import sweeps as sweep_store
from storage import undo
from storage.db import make_engine, transact
from storage.meta import DatabaseIdentity, identity
from worker import data
from worker import queue as q
from worker.defaults import ENQUEUE_WINDOW

log = logging.getLogger(__name__)
T = TypeVar("T")


LAUNCH_BATCH = 2_000  # trials sampled, inserted and enqueued at a time: ~10 MB in flight
FIRST_BATCH = 200  # a bigger launch commits this many first: workers start within ~a second
DEFER_INDEX_FROM = 50_000  # trials left to write from which the params-by-name index waits


@dataclass(frozen=True)
class Launched:
    sweep_id: int
    name: str
    stage_id: int
    n_trials: int
    enqueued: bool


def trial_seed(cfg: SweepConfig, stage_idx: int, trial_idx: int) -> int:
    """A trial's initialisation seed: a pure function of its place in the sweep.

    With ``init: shared`` (the default) every trial of a stage gets the same seed.
    """
    if cfg.init == "per_trial":
        return distinct_seed(cfg.seed, stage_idx, trial_idx)
    return distinct_seed(cfg.seed, stage_idx)


def distinct_seed(*key: int) -> int:
    """A 31-bit seed derived from ``key`` (fits a signed 32-bit column everywhere)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0]) & 0x7FFFFFFF


def stage_rng(sweep_seed: int, stage_idx: int) -> np.random.Generator:
    return np.random.default_rng([sweep_seed, stage_idx])


def fixed_params(cfg: SweepConfig) -> dict[str, Any]:
    """The config's fixed settings as params rows values (lists stay lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.train.items()}


def plan_trials(cfg: SweepConfig, stage_idx: int, space: dict[str, Any], n: int,
                first_idx: int = 0) -> list[sweep_store.TrialSpec]:
    """``n`` new trials sampled from ``space`` with the stage's budget."""
    return list(iter_trials(cfg, stage_idx, space, n, first_idx))


def iter_trials(cfg: SweepConfig, stage_idx: int, space: dict[str, Any], n: int,
                first_idx: int = 0) -> Iterator[sweep_store.TrialSpec]:
    """``plan_trials`` one trial at a time, the same trials in the same order."""
    epochs = cfg.stages[stage_idx].epochs
    fixed = fixed_params(cfg)
    shared = None if cfg.init == "per_trial" else trial_seed(cfg, stage_idx, 0)
    samples = iter_configs(space, n, stage_rng(cfg.seed, stage_idx))
    for i, p in enumerate(samples, first_idx):
        seed = trial_seed(cfg, stage_idx, i) if shared is None else shared
        yield sweep_store.TrialSpec(idx=i, seed=seed, epochs=epochs, params={**fixed, **p})


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def first_quorum(cfg: SweepConfig) -> int:
    return cfg.stages[0].trials if len(cfg.stages) == 1 else cfg.stages[0].quorum_trials


def prepare_dataset(cfg: SweepConfig) -> tuple[bytes, str, tuple[int, int, int]]:
    """Load and validate the dataset; its canonical bytes, sha256 and shape
    (rows, features per row, classes)."""
    parts = datasets.load_source(cfg.dataset)
    n_train, _, _ = data.carved_sizes(parts, cfg.val_fraction, cfg.test_fraction)
    check_batch_size(cfg, n_train)
    blob = data.encode(parts)
    n_features = int(np.prod(parts.input_shape))
    return blob, data.sha256(blob), (parts.n_rows, n_features, parts.n_classes)


def check_batch_size(cfg: SweepConfig, n_train: int) -> None:
    """A batch larger than the training rows is a mistake only the dataset reveals:
    ``DatasetError`` naming the key (the CLI exits 2 before anything is written)."""
    where, largest = "", None
    if "batch_size" in cfg.train:
        where, largest = "train.batch_size", cfg.train["batch_size"]
    elif "batch_size" in cfg.space:
        dist = cfg.space["batch_size"]
        where = "space.batch_size"
        largest = max(dist.values) if isinstance(dist, Choice) else dist.high
    if largest is not None and largest > n_train:
        raise data.DatasetError(
            f"{where}: {largest} is larger than the {n_train} training rows of "
            f"{datasets.describe(cfg.dataset)!r} (after val_fraction {cfg.val_fraction:g} "
            f"and test_fraction {cfg.test_fraction:g}); use at most {n_train}")


def create_sweep(engine: Engine, cfg: SweepConfig, queue_name: str,
                 dataset: tuple[bytes, str, tuple[int, int, int]],
                 on_batch: Callable[[list[int]], object] | None = None) -> Launched:
    """Write the sweep and its first stage, streaming the trials ``LAUNCH_BATCH`` at a time.

    The first transaction writes the dataset, the sweep, stage 0 and the first
    ``FIRST_BATCH`` trials; each later batch commits on its own and ``on_batch(ids)``
    runs after every commit (``launch`` enqueues them there), so workers start on the
    first trials while the rest are written, memory stays flat, and SQLite's write
    lock is free between batches. A stage of one batch (the usual case) is written in
    that one transaction, atomically. A bigger stage 0 stays ``launching`` until its
    last batch is in: it can neither advance nor close, since its quorum counts trials
    that do not exist yet. A launch that dies midway leaves it so; ``finish_launch``
    (run by ``hpsweep resume``) writes the missing trials, the same ones (sampling is a
    pure function of the seed).
    """
    blob, sha, shape = dataset
    n = cfg.stages[0].trials
    planned = iter_trials(cfg, 0, dict(cfg.space), n)
    first = list(itertools.islice(planned, n if n <= LAUNCH_BATCH else FIRST_BATCH))
    trials = batches(planned, LAUNCH_BATCH)

    def begin(s: Session) -> tuple[Launched, list[int]]:
        dataset_id = sweep_store.store_dataset(s, sha, datasets.describe(cfg.dataset), blob,
                                               shape)
        name = sweep_store.unique_sweep_name(s, cfg.name)
        sweep_id = sweep_store.create_sweep(
            s, name=name, config=cfg.to_dict(), dataset_id=dataset_id, seed=cfg.seed,
            queue=queue_name, n_stages=len(cfg.stages), max_attempts=cfg.max_attempts)
        stage_id = sweep_store.add_stage(s, sweep_id, 0, cfg.stages[0].epochs, n,
                                         {p: d.to_row() for p, d in cfg.space.items()},
                                         quorum=first_quorum(cfg),
                                         launching=len(first) < n)
        ids = sweep_store.add_trials(s, sweep_id, stage_id, first)
        return Launched(sweep_id, name, stage_id, n, False), ids

    made, ids = transact(engine, begin)
    if on_batch is not None:
        on_batch(ids)
    if len(first) < n:
        _write_rest(engine, made.stage_id, trials, n - len(first), on_batch)
    return made


def _write_rest(engine: Engine, stage_id: int, trials: Iterable[list[sweep_store.TrialSpec]],
                remaining: int, on_batch: Callable[[list[int]], object] | None,
                *, resumed: bool = False) -> bool:
    """Insert the remaining batches of a launching stage, one transaction each, then mark
    it running; stops (False) if the sweep stopped running meanwhile (cancelled).

    From ``DEFER_INDEX_FROM`` remaining trials the params-by-name index is dropped first
    and built again at the end, whatever the end (a launch killed midway leaves it to
    ``hpsweep resume``, which finishes the launch here, or to ``hpsweep db upgrade``).
    ``resumed``: the index is built again at the end whatever is left to write (the killed
    launch may have dropped it)."""
    deferred = remaining >= DEFER_INDEX_FROM
    if deferred:
        transact(engine, launching_store.suspend_params_index)
    try:
        for batch in trials:
            ids = transact(engine, lambda s, b=batch: launching_store.add_launch_batch(
                s, stage_id, b))
            if ids is None:
                return False
            if on_batch is not None:
                on_batch(ids)
        return transact(engine, lambda s: launching_store.end_launch(s, stage_id))
    finally:
        if deferred or resumed:
            transact(engine, launching_store.restore_params_index)


def finish_launch(engine: Engine, stage_id: int,
                  on_batch: Callable[[list[int]], object] | None = None) -> int:
    """Write the trials an interrupted launch left out of ``stage_id`` (a ``launching``
    stage 0) and mark it running; returns how many were written (0: nothing to do)."""
    found = transact(engine, lambda s: launching_store.launching_stage(s, stage_id))
    if found is None:
        return 0
    sweep, written = found
    cfg = SweepConfig.from_dict(sweep.config)
    n = cfg.stages[0].trials
    rest = itertools.islice(iter_trials(cfg, 0, dict(cfg.space), n), written, None)
    _write_rest(engine, stage_id, batches(rest, LAUNCH_BATCH), n - written, on_batch,
                resumed=True)
    return n - written


def enqueue_or_defer(conn: Redis | None, queue_name: str, trial_ids: list[int],
                     origin: DatabaseIdentity) -> bool:
    """Enqueue; on a Redis failure leave the trials queued in the DB for the reconciler."""
    if conn is None:
        return False
    try:
        q.enqueue_trials(q.make_queue(conn, queue_name), trial_ids, origin)
    except Exception as exc:  # noqa: BLE001 - the DB holds the trials; reconcile later
        log.warning("could not enqueue %d trial(s) (%s); workers will pick them up from the "
                    "database when Redis is back", len(trial_ids), exc)
        return False
    return True


class Enqueuer:
    """``on_batch`` for ``create_sweep``: enqueue each committed batch, up to the first
    ``ENQUEUE_WINDOW`` trials (the workers' reconcilers move the window on), until Redis
    fails once (the rest stays queued in the database for the reconcilers)."""

    def __init__(self, engine: Engine, conn: Redis | None, queue_name: str) -> None:
        self.conn, self.queue_name, self.room = conn, queue_name, ENQUEUE_WINDOW
        self.origin = identity(engine)
        self.ok = conn is not None

    def __call__(self, ids: list[int]) -> None:
        if self.ok and self.room > 0 and ids:
            self.ok = enqueue_or_defer(self.conn, self.queue_name, ids[:self.room], self.origin)
            self.room -= len(ids)


def enqueue_stage(engine: Engine, conn: Redis | None, queue_name: str, stage_id: int,
                  n_trials: int) -> bool:
    """Enqueue a stage's first ``ENQUEUE_WINDOW`` trials in ``idx`` order, ``LAUNCH_BATCH``
    ids read at a time (the reconcilers enqueue the rest as the window moves on)."""
    send = Enqueuer(engine, conn, queue_name)
    for lo in range(0, min(n_trials, ENQUEUE_WINDOW), LAUNCH_BATCH):
        send(transact(engine, lambda s, lo=lo: sweep_store.trial_ids_by_idx(
            s, stage_id, lo, lo + LAUNCH_BATCH)))
    return send.ok


def launch(engine: Engine, conn: Redis | None, cfg: SweepConfig,
           queue_name: str = q.DEFAULT_QUEUE,
           dataset: tuple[bytes, str, tuple[int, int, int]] | None = None) -> Launched:
    """Create the sweep (DB first), enqueueing each batch of stage 0 once committed.

    ``dataset`` is ``prepare_dataset(cfg)`` when the caller already checked it.
    """
    dataset = dataset or prepare_dataset(cfg)
    send = Enqueuer(engine, conn, queue_name)
    made = create_sweep(engine, cfg, queue_name, dataset, on_batch=send)
    return replace(made, enqueued=send.ok)


def launch_new(db_url: str, conn: Redis | None, cfg: SweepConfig, queue_name: str,
               dataset: tuple[bytes, str, tuple[int, int, int]]) -> tuple[Engine, Launched]:
    """Open (creating if needed) the database at ``db_url`` and launch into it.

    If that fails, whatever it created is removed: a new SQLite file, or the tables
    of a database that had none. Once the sweep is saved, nothing is ever removed.
    """
    with undo.removed_on_failure(db_url) as track:
        engine = track(make_engine(db_url))
        return engine, launch(engine, conn, cfg, queue_name, dataset)
