"""Live terminal output: the ``status --watch`` screen and step progress bars.

The screen is cleared and lines are redrawn only on a terminal; into a file or
a pipe the same content goes out as plain lines, and only when it changed.
Colour only on a terminal, never with ``NO_COLOR`` set (``term.use_color``).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import TextIO

import click
from sqlalchemy import Engine

from coordinator.progress import bar
from coordinator.report import status_text
from coordinator.term import CLEAR, Line, echo
from storage import sweeps as sweep_store
from storage.db import transact
from storage.models import SweepStatus

STATUS_COLORS = {"queued": "cyan", "running": "yellow", "done": "green", "pruned": "magenta",
                 "diverged": "red", "failed": "red", "cancelled": "bright_black"}
_STATUS_WORD = re.compile(r"\b(" + "|".join(STATUS_COLORS) + r")\b")


def colorize(text: str) -> str:
    """Status words in their colours (for terminals only)."""
    return _STATUS_WORD.sub(lambda m: click.style(m[1], fg=STATUS_COLORS[m[1]]), text)


def status_screen(engine: Engine, sweep_id: int) -> tuple[str, bool]:
    """(the status report, whether the sweep has ended)."""
    sweep = transact(engine, lambda s: sweep_store.get_sweep(s, sweep_id))
    assert sweep is not None
    return status_text(engine, sweep_id), sweep.status != SweepStatus.RUNNING.value


def watch(render: Callable[[], tuple[str, bool]], stream: TextIO, interval: float, *,
          sleep: Callable[[float], None] = time.sleep) -> str:
    """Show ``render()`` every ``interval`` seconds until it says the end; returns the
    last text. A terminal is cleared and redrawn; elsewhere changes are appended."""
    tty = stream.isatty()
    last = None
    while True:
        text, over = render()
        if tty:
            head = f"every {interval:g}s · {time.strftime('%H:%M:%S')} · Ctrl-C to stop"
            stream.write(CLEAR)  # echo strips the colours (NO_COLOR), never the redraw
            echo(click.style(head, dim=True) + "\n\n" + colorize(text), stream)
        elif text != last:
            stream.write(("" if last is None else "\n") + text + "\n")
        stream.flush()
        last = text
        if over:
            return text
        sleep(interval)


def watch_status(engine: Engine, sweep_id: int, interval: float,
                 stream: TextIO | None = None) -> str:
    """``hpsweep status --watch``: the live status of a sweep until it ends."""
    return watch(lambda: status_screen(engine, sweep_id), stream or sys.stdout, interval)


class StepBar:
    """A progress bar for steps (``__call__(what, done, total)``): one redrawn line on a
    terminal; elsewhere a line when the step changes, finishes, or every ``every`` s."""

    def __init__(self, stream: TextIO | None = None, every: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self._what = ""
        self._line = Line(self.stream)
        self._drawn = False
        self._last_time = 0.0

    def __call__(self, what: str, done: int, total: int) -> None:
        line = f"{what:<15} {bar(done, total)} {done}/{total}"
        if self.tty:
            self._line.draw(line)
            self._drawn = True
        elif (what != self._what or done == total
              or time.monotonic() - self._last_time > self.every):
            self.stream.write(line + "\n")
            self._last_time = time.monotonic()
        self.stream.flush()
        if self.tty and done == total:
            self._line.end()
            self._drawn = False
        self._what = what

    def close(self) -> None:
        if self._drawn:
            self._line.end()
            self.stream.flush()
            self._drawn = False
