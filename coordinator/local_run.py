"""Commands that run a sweep's workers on this machine: ``hpsweep run`` and
``hpsweep launch`` (checks before anything is written), ``ensemble --workers N``.

Check order (DESIGN: nothing is written on bad input): the config, then its
dataset, then Redis; only then is the database opened or created. Ctrl-C,
SIGTERM and SIGHUP (a closed terminal) stop the local workers in order and leave
the sweep resumable; an ignored SIGHUP (``nohup``) stays ignored
(``coordinator.lifetime``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from typing import Any, NoReturn

import click
from sqlalchemy import Engine

from coordinator.config import SweepConfig
from coordinator.lifetime import handle_stop_signals
from coordinator.runner import WorkerArgs, WorkerPool
from worker.process import WorkerOptions

INTERRUPTED = 130  # the shell's code for "stopped by Ctrl-C"
Dataset = tuple[bytes, str, tuple[int, int, int]]


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def checked_launch(config: str, max_trials: int | None) -> tuple[SweepConfig, Dataset]:
    """The config and its dataset, both checked before anything is written."""
    from coordinator.config import MAX_TRIALS_PER_STAGE, load_config
    from coordinator.launch import prepare_dataset

    cfg = load_config(config, max_trials=max_trials or MAX_TRIALS_PER_STAGE)
    return cfg, prepare_dataset(cfg)


@dataclass(frozen=True)
class Saved:
    """A launched sweep; ``unreachable`` says why it is saved but not enqueued."""

    name: str
    unreachable: str | None


def launch_sweep(config: str, db_url: str, redis_url: str, queue: str,
                 max_trials: int | None) -> Saved:
    """``hpsweep launch``: a Redis that is down is no reason to lose the sweep (it is
    saved, not enqueued); a Redis URL that can never work raises ``BadRedisURL`` first."""
    from coordinator.launch import launch_new
    from worker.queue import BadRedisURL, QueueError, connect

    cfg, dataset = checked_launch(config, max_trials)
    unreachable = None
    try:
        conn = connect(redis_url)
    except BadRedisURL:
        raise
    except QueueError as exc:
        unreachable, conn = str(exc), None
    _, made = launch_new(db_url, conn, cfg, queue, dataset)
    return Saved(made.name, unreachable)


@dataclass(frozen=True)
class Finished:
    engine: Engine
    sweep_id: int
    name: str
    status: str


def run_sweep(config: str, workers: int, db_url: str, redis_url: str | None, queue: str,
              lease_seconds: float, max_trials: int | None) -> Finished:
    """``hpsweep run``: launch CONFIG, serve it with ``workers`` local worker processes
    (and an embedded Redis unless ``redis_url``), draw progress on stderr, return once
    the sweep ends. Interrupted: says how to continue and exits 130."""
    from coordinator.embedded import EmbeddedRedis
    from coordinator.launch import launch_new
    from coordinator.progress import ProgressPrinter
    from coordinator.runner import supervise
    from worker.queue import connect

    # Every check (config, dataset, Redis) before the database is created.
    cfg, dataset = checked_launch(config, max_trials)
    with ExitStack() as stack:
        if redis_url is None:
            redis_url = stack.enter_context(EmbeddedRedis())
        conn = connect(redis_url)
        engine, made = launch_new(db_url, conn, cfg, queue, dataset)
        click.echo(f"sweep {made.name}: {made.n_trials} trials in stage 0 of "
                   f"{len(cfg.stages)}; {workers} worker(s)", err=True)
        pool = WorkerPool(workers, db_url, redis_url, WorkerArgs(
            WorkerOptions(queue=queue, reconcile_every=3), lease_seconds=lease_seconds))
        stack.callback(pool.stop)
        pool.start()
        printer = ProgressPrinter()
        handle_stop_signals(_interrupt)  # SIGTERM and SIGHUP (terminal closed) act as Ctrl-C
        try:
            final = supervise(engine, conn, made.sweep_id, pool, printer.update)
        except KeyboardInterrupt:
            _interrupted(printer.close, f"interrupted: sweep {made.name} is saved; continue "
                         f"it with `hpsweep resume {made.name}` and workers")
        printer.close()
    return Finished(engine, made.sweep_id, made.name, final.status)


def ensemble_with_workers(engine: Engine, sweep_id: int, method: str, k: int, *, wait: bool,
                          workers: int, db_url: str, redis_url: str) -> Any:
    """``hpsweep ensemble``: ``run_ensemble`` with a step bar on stderr and, for ``seeds``,
    ``workers`` local worker processes while it waits (0: rely on running workers)."""
    from coordinator.ensemble import run_ensemble
    from coordinator.live import StepBar
    from worker.queue import connect

    conn = connect(redis_url) if method == "seeds" else None
    with ExitStack() as stack:
        steps = StepBar()
        stack.callback(steps.close)

        def start_workers(queue: str) -> Callable[[], object]:
            pool = WorkerPool(workers, db_url, redis_url,
                              WorkerArgs(WorkerOptions(queue=queue, reconcile_every=3)))
            stack.callback(pool.stop)
            pool.start()
            return pool.revive

        handle_stop_signals(_interrupt)  # SIGTERM and SIGHUP (terminal closed) act as Ctrl-C
        try:
            return run_ensemble(engine, sweep_id, method, k, conn=conn, wait=wait,
                                on_progress=steps,
                                start_workers=start_workers if workers else None)
        except KeyboardInterrupt:
            _interrupted(steps.close, "interrupted: the seed trials stay queued; run the same "
                         "command again to wait for them and combine")


def _interrupted(close: Callable[[], None], message: str) -> NoReturn:
    with suppress(OSError):  # after SIGHUP the terminal may be gone (EIO)
        close()
        click.echo(message, err=True)
    sys.exit(INTERRUPTED)
