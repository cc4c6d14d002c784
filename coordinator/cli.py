"""The ``hpsweep`` command line. Commands parse, call one library function, print.

Exit codes: 0 success, 1 runtime failure, 2 bad input (config, arguments, SQL).
Data goes to stdout; progress, warnings and logs to stderr. The commands that read
results live in ``coordinator.cli_results``; shared options in ``coordinator.cli_common``.
"""

from __future__ import annotations

import os
import sys

import click

from coordinator import cli_results
from coordinator.cli_common import (
    db_option,
    looking,
    max_trials_option,
    open_engine,
    open_redis,
    queue_option,
    redis_option,
    setup_logging,
    sweep_id_of,
)
from coordinator.cli_errors import HpsweepGroup


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

    setup_logging("WARNING")
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

    setup_logging("WARNING")
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
@click.option("--models", envvar="HPSWEEP_MODELS", show_envvar=True, default=None,
              help="Comma-separated registered models this worker trains (default: every "
              "installed one); trials of other models go back to the queue for other workers.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def worker(db_url: str, redis_url: str, queue: str, burst: bool, max_jobs: int | None,
           processes: int, name: str | None, lease_seconds: float, reconcile_every: float,
           blas_threads: int, fork: bool, cache_dir: str | None, models: str | None,
           log_level: str) -> None:
    """Run a worker program: take trials from the queue and train them."""
    from coordinator.runner import WorkerArgs, serve_workers
    from worker.process import WorkerOptions

    setup_logging(log_level)
    if processes > 1 and name:
        raise click.UsageError("--name names one process; with --processes N each worker "
                               "process is named host-pid-xxxx")
    if models is not None:  # the worker processes read it (children inherit it)
        os.environ["HPSWEEP_MODELS"] = models
    opts = WorkerOptions(queue=queue, burst=burst, max_jobs=max_jobs,
                         reconcile_every=reconcile_every, fork=fork)
    failed = serve_workers(db_url, redis_url, processes, name,
                           WorkerArgs(opts, lease_seconds, cache_dir, log_level, blas_threads))
    if failed:
        raise click.ClickException(f"{len(failed)} of {processes} worker processes failed "
                                   f"(exit codes {failed})")


@main.command()
@click.argument("model")
@click.option("--input-shape", default="3,8,8", show_default=True,
              help="One example's shape: C,H,W for images, or the number of features.")
@click.option("--classes", type=click.IntRange(2), default=10, show_default=True)
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE",
              help="A constructor hyperparameter (repeatable), e.g. --set reg=0.1.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
def gradcheck(model: str, input_shape: str, classes: int, settings: tuple[str, ...],
              seed: int) -> None:
    """Sanity-check a registered model before a sweep: gradients (float64 centred
    differences, per parameter array), initial loss vs ln(classes), overfitting 20
    examples. Prints a pass/fail table; exit 1 when a check fails."""
    from coordinator.gradcheck import run

    table, passed = run(model, input_shape, classes, settings, seed)
    click.echo(table)
    if not passed:
        sys.exit(1)


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

        with looking(db_url) as source:
            click.echo(status_text(source, sweep_id_of(source, sweep)))
        return
    from coordinator.live import watch_status  # only --watch pays for the live view

    engine = open_engine(db_url, readonly=True)
    sweep_id = sweep_id_of(engine, sweep)
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

    with looking(db_url) as source:
        sweep_id = sweep_id_of(source, sweep)
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

    engine = open_engine(db_url, create=False)
    sweep_id = sweep_id_of(engine, sweep)
    note = resume_note(engine, sweep_id)
    if note:
        click.echo(note, err=True)
    done = resume_sweep(engine, open_redis(redis_url), sweep_id)
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

    engine = open_engine(db_url, create=False)
    sweep_id = sweep_id_of(engine, sweep)
    n = cancel_sweep(engine, open_redis(redis_url), sweep_id)
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

    engine = open_engine(db_url, create=False)
    ids = [sweep_id_of(engine, sweep)] if sweep else transact(engine, sweep_ids)
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

    engine = open_engine(db_url)
    made = extend_sweep(engine, open_redis(redis_url), sweep_id_of(engine, sweep), trials, epochs)
    click.echo(f"sweep {made.sweep}: stage {made.stage_idx} added with "
               f"{len(made.trial_ids)} trial(s); workers run it (`hpsweep status "
               f"{made.sweep}` to follow)")



for _command in cli_results.COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":
    main()
