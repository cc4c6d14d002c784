"""The ``hpsweep`` commands that read results: query, ensemble, plot, export, dashboard,
and the ``db`` group for the schema. Each parses, calls one library function, prints."""

from __future__ import annotations

import sys
from typing import Any

import click

from coordinator.choices import ENSEMBLE_METHODS
from coordinator.cli_common import db_option, open_engine, redis_option, sweep_id_of


@click.command()
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
    rows = run_query(open_engine(db_url, readonly=True), sql)
    click.echo(FORMATTERS[fmt](rows).rstrip("\n"))


@click.command()
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
    from coordinator.ensemble import SeedsPlan
    from coordinator.ensemble_text import plan_text, result_text
    from coordinator.local_run import ensemble_with_workers
    from coordinator.term import use_color

    engine = open_engine(db_url, create=False)  # writes its own rows only, creates no table
    out = ensemble_with_workers(engine, sweep_id_of(engine, sweep), method, k, wait=wait,
                                workers=workers, db_url=db_url, redis_url=redis_url)
    if isinstance(out, SeedsPlan):
        click.echo(plan_text(out))
        return
    click.echo(result_text(out, color=use_color(sys.stdout)))


@click.command()
@click.argument("sweep", required=False)
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False), default="plots",
              show_default=True, help="Folder for the PNG files (created if needed).")
@db_option
def plot(sweep: str | None, out_dir: str, db_url: str) -> None:
    """Write PNG plots of SWEEP (default: latest) into --out; print their paths."""
    from coordinator.plots import write_plots

    engine = open_engine(db_url, readonly=True)
    paths = write_plots(engine, sweep_id_of(engine, sweep), out_dir)
    for path in paths:
        click.echo(str(path))


@click.command()
@click.argument("sweep", required=False)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True, help="Output format.")
@click.option("--output", "-o", type=click.File("w"), default="-",
              help="File to write (default: stdout).")
@db_option
def export(sweep: str | None, fmt: str, output: Any, db_url: str) -> None:
    """One row per trial of SWEEP (default: latest), its parameters as columns."""
    from coordinator.export import export_text

    engine = open_engine(db_url, readonly=True)
    click.echo(export_text(engine, sweep_id_of(engine, sweep), fmt).rstrip("\n"), file=output)


@click.command()
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
    engine = open_engine(db_url, readonly=True, create=False)
    sock = listen(host, port)
    click.echo(f"hpsweep dashboard (read-only): "
               f"{dashboard_url(host, sock.getsockname()[1], token)}  Ctrl-C stops", err=True)
    serve(engine, sock, token)


@click.group()
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

COMMANDS = (query, ensemble, plot, export, dashboard, db)
