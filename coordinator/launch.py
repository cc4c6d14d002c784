"""Create a sweep in the database, then hand its first stage to Redis.

The database is written first, in one transaction (dataset blob, sweep,
stage 0 with its ranges, trials and params); only then are the jobs
enqueued. If Redis is down at that moment nothing is lost: the trials are
``queued`` in the database and any worker's reconciler enqueues them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator import datasets
from coordinator.config import SweepConfig
from coordinator.space import Choice, iter_configs
from storage import sweeps as sweep_store
from storage import undo
from storage.db import make_engine, transact
from storage.meta import DatabaseIdentity, identity
from worker import data
from worker import queue as q

log = logging.getLogger(__name__)
T = TypeVar("T")


LAUNCH_BATCH = 2_000  # trials sampled, inserted and enqueued at a time: ~10 MB in flight


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
    samples = iter_configs(space, n, stage_rng(cfg.seed, stage_idx))
    for i, p in enumerate(samples):
        yield sweep_store.TrialSpec(idx=first_idx + i, seed=trial_seed(cfg, stage_idx,
                                                                       first_idx + i),
                                    epochs=epochs, params={**fixed, **p})


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
                 dataset: tuple[bytes, str, tuple[int, int, int]]) -> Launched:
    """Write the sweep and its first stage in one transaction.

    The trials are sampled and inserted ``LAUNCH_BATCH`` at a time, so memory stays
    flat however many there are; one transaction keeps the launch atomic (a failure
    midway leaves no sweep behind). On SQLite that transaction holds the write lock
    until it commits: other writers wait (busy timeout, then retries).
    """
    blob, sha, shape = dataset
    n = cfg.stages[0].trials

    def work(s: Session) -> Launched:
        dataset_id = sweep_store.store_dataset(s, sha, datasets.describe(cfg.dataset), blob,
                                               shape)
        name = sweep_store.unique_sweep_name(s, cfg.name)
        sweep_id = sweep_store.create_sweep(
            s, name=name, config=cfg.to_dict(), dataset_id=dataset_id, seed=cfg.seed,
            queue=queue_name, n_stages=len(cfg.stages), max_attempts=cfg.max_attempts)
        stage_id = sweep_store.add_stage(s, sweep_id, 0, cfg.stages[0].epochs, n,
                                         {p: d.to_row() for p, d in cfg.space.items()},
                                         quorum=first_quorum(cfg))
        for batch in batches(iter_trials(cfg, 0, dict(cfg.space), n), LAUNCH_BATCH):
            sweep_store.add_trials(s, sweep_id, stage_id, batch)
        return Launched(sweep_id, name, stage_id, n, False)

    return transact(engine, work)


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


def enqueue_stage(engine: Engine, conn: Redis | None, queue_name: str, stage_id: int,
                  n_trials: int) -> bool:
    """Enqueue a stage's trials in ``idx`` order, ``LAUNCH_BATCH`` ids read at a time."""
    origin = identity(engine)
    for lo in range(0, n_trials, LAUNCH_BATCH):
        ids = transact(engine, lambda s, lo=lo: sweep_store.trial_ids_by_idx(
            s, stage_id, lo, lo + LAUNCH_BATCH))
        if not enqueue_or_defer(conn, queue_name, ids, origin):
            return False
    return True


def launch(engine: Engine, conn: Redis | None, cfg: SweepConfig,
           queue_name: str = q.DEFAULT_QUEUE,
           dataset: tuple[bytes, str, tuple[int, int, int]] | None = None) -> Launched:
    """Create the sweep (DB first), then enqueue its first stage.

    ``dataset`` is ``prepare_dataset(cfg)`` when the caller already checked it.
    """
    dataset = dataset or prepare_dataset(cfg)
    made = create_sweep(engine, cfg, queue_name, dataset)
    ok = enqueue_stage(engine, conn, queue_name, made.stage_id, made.n_trials)
    return replace(made, enqueued=ok)


def launch_new(db_url: str, conn: Redis | None, cfg: SweepConfig, queue_name: str,
               dataset: tuple[bytes, str, tuple[int, int, int]]) -> tuple[Engine, Launched]:
    """Open (creating if needed) the database at ``db_url`` and launch into it.

    If that fails, whatever it created is removed: a new SQLite file, or the tables
    of a database that had none. Once the sweep is saved, nothing is ever removed.
    """
    with undo.removed_on_failure(db_url) as track:
        engine = track(make_engine(db_url))
        return engine, launch(engine, conn, cfg, queue_name, dataset)
