"""A local pool's worker children are told exactly the options their pool was given:
their command line, built in one place, parses back to the same settings."""

from __future__ import annotations

import pytest

from coordinator.cli import main
from coordinator.runner import WorkerArgs
from worker.process import WorkerOptions


def _parsed(args: WorkerArgs) -> dict[str, object]:
    """The parameters ``hpsweep worker`` would receive from ``args.argv()``."""
    argv = args.argv()
    assert argv[0] == "worker"
    with main.make_context("hpsweep", list(argv)) as ctx:
        name, cmd, rest = main.resolve_command(ctx, argv)
        assert name == "worker" and cmd is not None
        with cmd.make_context(name, rest, parent=ctx) as sub:
            return dict(sub.params)


@pytest.mark.parametrize("args", [
    WorkerArgs(WorkerOptions(queue="q1", reconcile_every=3), lease_seconds=12.5),
    WorkerArgs(WorkerOptions(queue="q2", burst=True, max_jobs=7, reconcile_every=0.25,
                             fork=True), lease_seconds=1234567.0, cache_dir="/tmp/cache dir",
               log_level="debug", blas_threads=3),
    WorkerArgs(WorkerOptions()),
])
def test_a_child_parses_back_to_its_pools_options(args: WorkerArgs,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HPSWEEP_CACHE", "HPSWEEP_WORKER_NAME"):  # options that read the environment
        monkeypatch.delenv(var, raising=False)
    got = _parsed(args)
    opts = args.opts
    assert (got["queue"], got["burst"], got["max_jobs"], got["reconcile_every"], got["fork"]) \
        == (opts.queue, opts.burst, opts.max_jobs, opts.reconcile_every, opts.fork)
    assert (got["log_level"], got["blas_threads"]) == (args.log_level, args.blas_threads)
    assert got["cache_dir"] == args.cache_dir
    assert got["lease_seconds"] == (args.lease_seconds or 30.0)
    assert got["processes"] == 1 and got["name"] is None


def test_no_url_is_on_a_childs_command_line() -> None:
    argv = WorkerArgs(WorkerOptions(queue="q"), cache_dir="/c").argv()
    assert not any("://" in a for a in argv)
    assert "--db" not in argv and "--redis" not in argv
