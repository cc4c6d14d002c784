"""Live progress on stderr: a redrawn bar on a terminal, sparse lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from coordinator.report import Progress
from coordinator.term import Line


def bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / total) if total else width
    return "█" * filled + "░" * (width - filled)


def progress_line(p: Progress) -> str:
    """One line of ``run``'s progress; the stage is named by its ``stages.idx`` (from 0),
    as ``status``, ``best`` and SQL name it."""
    best = f"{p.best_val_acc:.4f}" if p.best_val_acc is not None else "—"
    return (f"stage {p.stage_idx} (of {p.n_stages}) {bar(p.finished, p.total)} "
            f"{p.finished}/{p.total} trials · best val_acc {best}")


class ProgressPrinter:
    """Redraws one line on a terminal; prints a line every 10 s (or on change of stage)
    when stderr is a file or a pipe."""

    def __init__(self, stream: TextIO | None = None, every: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self._line = Line(self.stream)
        self._last = ""
        self._printed = ""
        self._last_time = 0.0
        self._last_stage = -1

    def update(self, p: Progress) -> None:
        line = progress_line(p)
        if self.tty:
            if line != self._last:
                self._line.draw(line)
                self.stream.flush()
        elif p.stage_idx != self._last_stage or time.monotonic() - self._last_time > self.every:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._printed = line
            self._last_time = time.monotonic()
            self._last_stage = p.stage_idx
        self._last = line

    def close(self) -> None:
        if self.tty and self._last:
            self._line.end()
        elif not self.tty and self._last and self._last != self._printed:
            self.stream.write(self._last + "\n")
        self.stream.flush()
