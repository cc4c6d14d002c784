"""Terminal text: colour through Click, lines redrawn in place, aligned tables.

Colour only on a terminal and never with ``NO_COLOR`` set (``use_color``); styled text goes
out through ``click.echo``, which strips the codes wherever colour is off. The one cursor
command Click does not offer for a given stream (clear the screen) is ``CLEAR``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TextIO

import click

CLEAR = "\033[H\033[2J"  # cursor home, erase the screen: what click.clear() writes to stdout


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def paint(text: str, color: bool, **style: Any) -> str:
    """``text`` in ``click.style(**style)`` when ``color``, else as it is."""
    return click.style(text, **style) if color else text


def echo(text: str, stream: TextIO, *, nl: bool = True) -> None:
    """``text`` to ``stream``, its colour codes stripped unless ``use_color(stream)``."""
    click.echo(text, file=stream, nl=nl, color=use_color(stream))
    stream.flush()


class Line:
    """One line of a terminal redrawn in place: a carriage return, the text, and blanks
    over whatever the previous text left beyond it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self._width = stream, 0

    def draw(self, text: str) -> None:
        self.stream.write("\r" + text.ljust(self._width))
        self._width = len(text)

    def end(self) -> None:
        """Leave the line as it stands and move below it."""
        self.stream.write("\n")
        self._width = 0


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, rule: bool = True) -> str:
    """Left-aligned columns two spaces apart, under a header (and a rule of dashes)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    out = [line(header)] + ([line(["-" * w for w in widths])] if rule else [])
    return "\n".join(out + [line(r) for r in rows])
