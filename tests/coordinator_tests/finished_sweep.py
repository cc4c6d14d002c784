"""A small finished sweep for the ensemble, plot and export tests.

``build`` launches a tiny spiral sweep and drains it with one ``hpsweep worker
--burst`` process; ``Template`` builds it once per test module on SQLite and
hands every test its own copy (the tests write ensembles rows).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from coordinator.cli import main
from tests.support.configs import write_config
from tests.support.processes import Fleet

TINY: dict[str, Any] = {
    "name": "tiny",
    "keep_snapshots": 3,
    "select": "raw",
    "train": {"depth": 1, "batch_size": 64, "update_rule": "adam", "ema_decay": 0.9},
    "space": {"learning_rate": {"dist": "log_uniform", "low": 1e-3, "high": 1e-1},
              "reg": {"dist": "log_uniform", "low": 1e-6, "high": 1e-2},
              "hidden_size": {"dist": "int_log_uniform", "low": 8, "high": 64}},
    "stages": [{"trials": 8, "epochs": 2}, {"trials": 4, "epochs": 6}],
}


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def build(db_url: str, redis_url: str, workdir: Path, **overrides: Any) -> str:
    """Launch the tiny sweep (``TINY`` updated by ``overrides``), run it to the end
    with a burst worker; returns the sweep's name."""
    cfg = write_config(workdir / "tiny.yaml", **{**TINY, **overrides})
    res = cli("launch", str(cfg), "--db", db_url, "--redis", redis_url)
    assert res.exit_code == 0, res.output
    drain(db_url, redis_url, workdir)
    return res.output.strip().splitlines()[-1]


def drain(db_url: str, redis_url: str, workdir: Path) -> None:
    """One burst worker until the queue is empty."""
    Fleet(workdir, db_url, redis_url).drain("--log-level", "warning")


class Template:
    """A finished SQLite sweep built on first use, copied for each test."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.name: str | None = None

    def copy(self, redis_url: str, dest: Path) -> tuple[str, str]:
        """(database URL of a fresh copy, sweep name)."""
        src = self.workdir / "template.db"
        if self.name is None:
            self.name = build(f"sqlite:///{src}", redis_url, self.workdir)
        for suffix in ("", "-wal"):  # the WAL too, if a connection left one
            if (self.workdir / f"template.db{suffix}").exists():
                shutil.copy(self.workdir / f"template.db{suffix}", dest / f"copy.db{suffix}")
        return f"sqlite:///{dest / 'copy.db'}", self.name
