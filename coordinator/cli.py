"""The ``hpsweep`` command line. Commands parse, call one library function, print.

Exit codes: 0 success, 1 runtime failure, 2 bad input (config, arguments, SQL).
Data goes to stdout; progress, warnings and logs to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from coordinator.choices import ENSEMBLE_METHODS
from coordinator.cli_errors import HpsweepGroup
from worker.defaults import DEFAULT_DB, DEFAULT_QUEUE, DEFAULT_REDIS

if TYPE_CHECKING:  # not imported at run time: a command imports only what it uses
    from redis import Redis
    from sqlalchemy import Engine

    from storage.plain import Reader

F = TypeVar("F", bound=Callable[..., Any])

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


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _engine(db_url: str, readonly: bool = False, create: bool = True) -> Engine:
    """``create``: hpsweep's schema where missing; otherwise the database must exist
    (``DatabaseNotFound``, exit 2) and nothing is created. ``readonly`` for commands that
    only look."""
    from storage.db import make_engine

    return make_engine(db_url, readonly=readonly, create=create)


def _redis(url: str) -> Redis:
    from worker.queue import connect

    return connect(url)


@contextmanager
def _looking(db_url: str) -> Iterator[Engine | Reader]:
    """What ``status`` and ``best`` read: a plain read-only connection where one applies
    (no SQLAlchemy to import: the command finishes in a fraction of the time), else a
    read-only engine, which also gives every error its usual message."""
    from storage.plain import open_reader

    reader = open_reader(db_url)
    if reader is None:
        yield _engine(db_url, readonly=True)
        return
    with reader:
        yield reader


def _sweep_id(engine: Engine | Reader, name: str | None) -> int:
    from coordinator.report import find_sweep

    sweep = find_sweep(engine, name)
    if sweep is None:
        raise click.BadParameter(f"no sweep named {name!r}" if name else "no sweeps yet",
                                 param_hint="SWEEP")
    return sweep.id


@click.group(cls=HpsweepGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="hpsweep")
def main() -> None:
    """hpsweep: coarse-to-fine hyperparameter sweeps of a NumPy network.

    A coordinator samples configurations, RQ workers on one or many machines
    train them, and every result lands in SQL. Start with:

        hpsweep run configs/digits.yaml --workers 2
    """


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--workers", "-w", type=click.IntRange(1, 256), default=os.cpu_count() or 1,
              show_default=True, help="Local worker processes to start.")
@db_option
@click.option("--redis", "redis_url", envvar="HPSWEEP_REDIS", show_envvar=True, default=None,
              help="Redis URL; default: an embedded Redis for the run's lifetime.")
@queue_option
@click.option("--top", type=click.IntRange(1), default=5, show_default=True,
              help="Best trials to print at the end.")
@click.option("--lease-seconds", type=click.FloatRange(0.5), default=30.0, show_default=True,
              help="A trial whose worker is silent this long is retried elsewhere.")
@max_trials_option
def run(config: str, workers: int, db_url: str, redis_url: str | None, queue: str, top: int,
        lease_seconds: float, max_trials: int | None) -> None:
    """Launch CONFIG, run N local workers with live progress, print the best trials."""
    from coordinator import report
    from coordinator.local_run import run_sweep

    _setup_logging("WARNING")
    done = run_sweep(config, workers, db_url, redis_url, queue, lease_seconds, max_trials)
    click.echo(f"sweep {done.name}: {done.status}")
    click.echo(report.best_text(done.engine, done.sweep_id, top))
    warnings = report.warnings_text(done.engine, done.sweep_id)
    if warnings:
        click.echo(warnings, err=True)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@db_option
@redis_option
@queue_option
@max_trials_option
def launch(config: str, db_url: str, redis_url: str, queue: str, max_trials: int | None) -> None:
    """Create and enqueue the sweep of CONFIG, print its name, return.

    A Redis that is down is no reason to lose the sweep: it is saved, and
    `hpsweep resume NAME` (or any worker's reconciler) enqueues it later. A Redis
    URL that can never work (bad scheme, port or db number) exits 2 first.
    """
    from coordinator.local_run import launch_sweep

    _setup_logging("WARNING")
    saved = launch_sweep(config, db_url, redis_url, queue, max_trials)
    if saved.unreachable:
        click.echo(f"warning: {saved.unreachable}\nsweep {saved.name} is saved but not "
                   f"enqueued: once Redis is up, run `hpsweep resume {saved.name}` (same "
                   "--redis), or workers will enqueue it from the database when they start",
                   err=True)
    click.echo(saved.name)


@main.command()
@db_option
@redis_option
@queue_option
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--max-jobs", type=click.IntRange(1), default=None, help="Exit after N jobs.")
@click.option("--processes", "-n", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes to run on this machine (supervised).")
@click.option("--name", envvar="HPSWEEP_WORKER_NAME", default=None,
              help="Worker name (default host-pid-xxxx, xxxx random); recorded in "
              "trials.worker.")
@click.option("--lease-seconds", type=click.FloatRange(0.5), default=30.0, show_default=True,
              help="Lease length; heartbeats renew it every third of it.")
@click.option("--reconcile-every", type=click.FloatRange(0.1), default=5.0, show_default=True,
              help="Seconds between reconciliation passes (lost jobs, expired leases).")
@click.option("--blas-threads", type=click.IntRange(1), default=1, show_default=True,
              help="BLAS threads per worker process.")
@click.option("--fork", is_flag=True, help="Use RQ's forking Worker (one process per job).")
@click.option("--cache-dir", type=click.Path(file_okay=False), envvar="HPSWEEP_CACHE",
              default=None, help="Dataset cache folder shared by this host's workers.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def worker(db_url: str, redis_url: str, queue: str, burst: bool, max_jobs: int | None,
           processes: int, name: str | None, lease_seconds: float, reconcile_every: float,
           blas_threads: int, fork: bool, cache_dir: str | None, log_level: str) -> None:
    """Run a worker program: take trials from the queue and train them."""
    from coordinator.runner import WorkerArgs, serve_workers
    from worker.process import WorkerOptions

    _setup_logging(log_level)
    if processes > 1 and name:
        raise click.UsageError("--name names one process; with --processes N each worker "
                               "process is named host-pid-xxxx")
    opts = WorkerOptions(queue=queue, burst=burst, max_jobs=max_jobs,
                         reconcile_every=reconcile_every, fork=fork)
    failed = serve_workers(db_url, redis_url, processes, name,
                           WorkerArgs(opts, lease_seconds, cache_dir, log_level, blas_threads))
    if failed:
        raise click.ClickException(f"{len(failed)} of {processes} worker processes failed "
                                   f"(exit codes {failed})")


@main.command()
@click.argument("sweep", required=False)
@db_option
@click.option("--watch", is_flag=True, help="Redraw live until the sweep ends (Ctrl-C stops).")
@click.option("--interval", type=click.FloatRange(0.1), default=2.0, show_default=True,
              help="Seconds between redraws with --watch.")
def status(sweep: str | None, db_url: str, watch: bool, interval: float) -> None:
    """Stages, ranges, trial counts by status, best trial, boundary flags (default: latest)."""
    if not watch:
        from coordinator.report import status_text

        with _looking(db_url) as source:
            click.echo(status_text(source, _sweep_id(source, sweep)))
        return
    from coordinator.live import watch_status  # only --watch pays for the live view

    engine = _engine(db_url, readonly=True)
    sweep_id = _sweep_id(engine, sweep)
    try:
        watch_status(engine, sweep_id, interval)
    except KeyboardInterrupt:
        click.echo("", err=True)


@main.command()
@click.argument("sweep", required=False)
@db_option
@click.option("--top", "-k", type=click.IntRange(1), default=5, show_default=True,
              help="How many trials.")
def best(sweep: str | None, db_url: str, top: int) -> None:
    """The best trials of SWEEP (default: latest) with their parameters."""
    from coordinator import report

    with _looking(db_url) as source:
        sweep_id = _sweep_id(source, sweep)
        click.echo(report.best_text(source, sweep_id, top))
        warnings = report.warnings_text(source, sweep_id)
    if warnings:
        click.echo(warnings, err=True)


@main.command()
@click.argument("sweep")
@db_option
@redis_option
def resume(sweep: str, db_url: str, redis_url: str) -> None:
    """Re-enqueue whatever the database says is unfinished in SWEEP (idempotent)."""
    from coordinator.control import resume_sweep
    from coordinator.report import resume_note

    engine = _engine(db_url, create=False)
    sweep_id = _sweep_id(engine, sweep)
    note = resume_note(engine, sweep_id)
    if note:
        click.echo(note, err=True)
    done = resume_sweep(engine, _redis(redis_url), sweep_id)
    click.echo(f"reaped {len(done.reaped)} stale, failed {len(done.exhausted)} exhausted, "
               f"re-enqueued {len(done.requeued)} trial(s), re-advanced "
               f"{len(done.advanced)} stage(s); repaired: closed {len(done.closed)} "
               f"stage(s), finished {len(done.finished)} sweep(s), cancelled "
               f"{len(done.cancelled)} leftover trial(s)")


@main.command()
@click.argument("sweep")
@db_option
@redis_option
def cancel(sweep: str, db_url: str, redis_url: str) -> None:
    """Stop SWEEP: no new stage, queued trials dropped, running ones stop at epoch end."""
    from coordinator.control import cancel_sweep

    engine = _engine(db_url, create=False)
    sweep_id = _sweep_id(engine, sweep)
    n = cancel_sweep(engine, _redis(redis_url), sweep_id)
    click.echo(f"cancelled {sweep}: {n} queued trial(s) dropped; running trials stop at "
               "their next epoch boundary")


@main.command()
@click.argument("sweep", required=False)
@db_option
@click.option("--vacuum", is_flag=True,
              help="Then give the space back to the filesystem (SQLite VACUUM, PostgreSQL "
                   "VACUUM FULL checkpoints; writers wait meanwhile).")
def gc(sweep: str | None, db_url: str, vacuum: bool) -> None:
    """Apply the checkpoint retention policy to SWEEP (default: every sweep)."""
    from coordinator.retention import collect, collected_text
    from storage.db import transact
    from storage.retention import sweep_ids

    engine = _engine(db_url, create=False)
    ids = [_sweep_id(engine, sweep)] if sweep else transact(engine, sweep_ids)
    click.echo(collected_text(collect(engine, ids, vacuum)))


@main.command()
@click.argument("sweep")
@db_option
@redis_option
@click.option("--trials", type=click.IntRange(1), default=None,
              help="Trials of the new stage (default: the stage the config planned next, "
                   "else as many as the last stage).")
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="Epochs per trial of the new stage (default: as --trials).")
def extend(sweep: str, db_url: str, redis_url: str, trials: int | None,
           epochs: int | None) -> None:
    """Add a stage to a finished or cancelled SWEEP, planned from its last stage and flags."""
    from coordinator.extend import extend_sweep

    engine = _engine(db_url)
    made = extend_sweep(engine, _redis(redis_url), _sweep_id(engine, sweep), trials, epochs)
    click.echo(f"sweep {made.sweep}: stage {made.stage_idx} added with "
               f"{len(made.trial_ids)} trial(s); workers run it (`hpsweep status "
               f"{made.sweep}` to follow)")


@main.command()
@click.argument("sql", required=False)
@click.option("--file", "-f", "sql_file", type=click.File("r"), default=None,
              help="Read the statement from this file ('-': stdin).")
@db_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format. NULL prints as empty (table, csv) or "
              "null (json); intervals as seconds; dates and times as ISO 8601; numeric "
              "(Decimal) as a number; bytes as base64 (csv, json) or <N bytes> (table).")
def query(sql: str | None, sql_file: Any, db_url: str, fmt: str) -> None:
    """Run a read-only SQL statement (SELECT/WITH) over the results.

    SQL is the statement, or '-' to read it from stdin; --file reads it from a file.
    It is sent to the database as written: no :name parameters, '%' is literal.
    """
    from coordinator.query import FORMATTERS, check_read_only, run_query

    if (sql is None) == (sql_file is None):
        raise click.UsageError("give the SQL statement, '-' (stdin) or --file PATH, one of them")
    if sql_file is not None:
        sql = sql_file.read()
    elif sql == "-":
        sql = sys.stdin.read()
    assert sql is not None
    check_read_only(sql)  # before opening anything
    rows = run_query(_engine(db_url, readonly=True), sql)
    click.echo(FORMATTERS[fmt](rows).rstrip("\n"))


@main.command()
@click.argument("sweep", required=False)
@click.option("--method", "-m", type=click.Choice(ENSEMBLE_METHODS), default="top-k",
              show_default=True, help="top-k: best K configurations; seeds: the best one "
              "retrained with K seeds; snapshots: last K checkpoints of the best trial; "
              "average: its running-average (EMA) weights.")
@click.option("--k", "-k", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Members of the ensemble (ignored by average).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="seeds: wait for workers to train the seed trials, then combine them.")
@click.option("--workers", "-w", type=click.IntRange(0, 256), default=0, show_default=True,
              help="seeds: local worker processes to start while waiting (0: use running "
              "workers).")
@db_option
@redis_option
def ensemble(sweep: str | None, method: str, k: int, wait: bool, workers: int, db_url: str,
             redis_url: str) -> None:
    """Evaluate an ensemble of SWEEP's models on validation and test; record it."""
    from coordinator import ensemble as ens
    from coordinator.local_run import ensemble_with_workers
    from coordinator.term import use_color

    engine = _engine(db_url, create=False)  # writes its own rows only, creates no table
    out = ensemble_with_workers(engine, _sweep_id(engine, sweep), method, k, wait=wait,
                                workers=workers, db_url=db_url, redis_url=redis_url)
    if isinstance(out, ens.SeedsPlan):
        click.echo(ens.plan_text(out))
        return
    click.echo(ens.result_text(out, color=use_color(sys.stdout)))


@main.command()
@click.argument("sweep", required=False)
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False), default="plots",
              show_default=True, help="Folder for the PNG files (created if needed).")
@db_option
def plot(sweep: str | None, out_dir: str, db_url: str) -> None:
    """Write PNG plots of SWEEP (default: latest) into --out; print their paths."""
    from coordinator.plots import write_plots

    engine = _engine(db_url, readonly=True)
    paths = write_plots(engine, _sweep_id(engine, sweep), out_dir)
    for path in paths:
        click.echo(str(path))


@main.command()
@click.argument("sweep", required=False)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True, help="Output format.")
@click.option("--output", "-o", type=click.File("w"), default="-",
              help="File to write (default: stdout).")
@db_option
def export(sweep: str | None, fmt: str, output: Any, db_url: str) -> None:
    """One row per trial of SWEEP (default: latest), its parameters as columns."""
    from coordinator.export import export_text

    engine = _engine(db_url, readonly=True)
    click.echo(export_text(engine, _sweep_id(engine, sweep), fmt).rstrip("\n"), file=output)


@main.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; anything but loopback requires --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="TCP port.")
@click.option("--token", envvar="HPSWEEP_DASHBOARD_TOKEN", show_envvar=True, default=None,
              help="Secret every request must carry (required with a non-loopback --host).")
def dashboard(db_url: str, host: str, port: int, token: str | None) -> None:
    """Serve a read-only live web dashboard of the database's sweeps (Ctrl-C stops)."""
    try:
        from coordinator.dashboard.server import check_binding, dashboard_url, listen, serve
    except ImportError as exc:
        raise click.ClickException(f"the dashboard needs its extra ({exc.name} is missing): "
                                   "pip install -e '.[dashboard]'") from None

    check_binding(host, token)
    engine = _engine(db_url, readonly=True, create=False)
    sock = listen(host, port)
    click.echo(f"hpsweep dashboard (read-only): "
               f"{dashboard_url(host, sock.getsockname()[1], token)}  Ctrl-C stops", err=True)
    serve(engine, sock, token)


@main.group()
def db() -> None:
    """The results database's schema: its revision, and upgrading an older one."""


@db.command("current")
@db_option
def db_current(db_url: str) -> None:
    """Print the database's schema revision (read-only)."""
    from storage.schema import revision_at

    found, head = revision_at(db_url)
    click.echo(found)
    if found != head:
        click.echo(f"this hpsweep writes {head}: run `hpsweep db upgrade`", err=True)


@db.command("upgrade")
@db_option
def db_upgrade(db_url: str) -> None:
    """Upgrade the database's schema to this hpsweep's, in place (writers also do it on start)."""
    from storage.schema import upgrade_at

    was, head = upgrade_at(db_url)
    click.echo(f"database upgraded from {was} to {head}" if was != head
               else f"database already at {head}", err=True)


if __name__ == "__main__":
    main()
