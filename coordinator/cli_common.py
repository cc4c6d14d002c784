"""What every ``hpsweep`` command shares: its options and how it opens the database.

Nothing here imports more than Click at import time, so ``hpsweep --help`` stays fast;
each helper imports what it needs when called.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy import Engine

from worker.defaults import DEFAULT_DB, DEFAULT_QUEUE, DEFAULT_REDIS

db_option = click.option(
    "--db", "db_url", envvar="HPSWEEP_DB", show_envvar=True, default=DEFAULT_DB,
    show_default=True, help="Results database URL (sqlite:///file.db or "
    "postgresql+psycopg://user:pass@host/db).")
redis_option = click.option(
    "--redis", "redis_url", envvar="HPSWEEP_REDIS", show_envvar=True, default=DEFAULT_REDIS,
    show_default=True, help="Redis URL that carries the jobs.")
queue_option = click.option("--queue", default=DEFAULT_QUEUE, show_default=True,
                            help="RQ queue name.")
max_trials_option = click.option(
    "--max-trials", type=click.IntRange(1), default=None,
    help="Most trials one stage may have (default 1,000,000: a typo such as "
    "`trials: 100000000` is refused, exit 2, before anything is written).")


def setup_logging(level: str = "INFO") -> None:
    """Log lines to stderr (data goes to stdout)."""
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def open_engine(db_url: str, readonly: bool = False, create: bool = True) -> Engine:
    """``create``: hpsweep's schema where missing; otherwise the database must exist
    (``DatabaseNotFound``, exit 2) and nothing is created. ``readonly`` for commands that
    only look."""
    from storage.db import make_engine

    return make_engine(db_url, readonly=readonly, create=create)


def open_redis(url: str) -> Redis:
    from worker.queue import connect

    return connect(url)


@contextmanager
def looking(db_url: str) -> Iterator[Any]:
    """What ``status`` and ``best`` read: a plain read-only connection where one applies
    (no SQLAlchemy to import: the command finishes in a fraction of the time), else a
    read-only engine, which also gives every error its usual message."""
    from storage.plain import open_reader

    reader = open_reader(db_url)
    if reader is None:
        yield open_engine(db_url, readonly=True)
        return
    with reader:
        yield reader


def sweep_id_of(engine: Any, name: str | None) -> int:
    """The id of sweep ``name`` (None: the latest); a usage error (exit 2) if none."""
    from coordinator.report import find_sweep

    sweep = find_sweep(engine, name)
    if sweep is None:
        raise click.BadParameter(f"no sweep named {name!r}" if name else "no sweeps yet",
                                 param_hint="SWEEP")
    return sweep.id

