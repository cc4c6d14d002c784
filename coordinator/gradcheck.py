"""``hpsweep gradcheck MODEL``: the notes' sanity checks for a registered model, as a table.

The checks themselves are ``worker.nn.sanity``'s; this module resolves the model by its
registered name, reads ``--set name=value`` hyperparameters against the constructor's
signature, and formats the pass/fail table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from worker import models
from worker.nn import protocol, sanity


class GradcheckUsageError(ValueError):
    """A model that is not installed, a bad ``--set`` or ``--input-shape``: exit 2."""


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise GradcheckUsageError(f"--input-shape: expected positive integers separated by "
                                  f"commas (e.g. 3,8,8 or 64), got {text!r}")
    return shape


def parse_settings(cls: type, name: str, settings: Sequence[str]) -> dict[str, Any]:
    """``["reg=0.1", "num_filters=4"]`` -> constructor keyword arguments (YAML values)."""
    takes = protocol.hyper_parameters(cls)
    out: dict[str, Any] = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep:
            raise GradcheckUsageError(f"--set: expected name=value, got {item!r}")
        if key not in takes:
            raise GradcheckUsageError(
                f"--set {key}: model {name!r} takes no hyperparameter {key!r} (it takes: "
                f"{', '.join(takes) or 'none'}){models.suggestion(key, takes)}")
        out[key] = yaml.safe_load(raw)
    return protocol.coerce(cls, out)


def run(name: str, input_shape: str, num_classes: int, settings: Sequence[str],
        seed: int) -> tuple[str, bool]:
    """The table of every check and whether all passed."""
    try:
        cls = models.load(name)
    except models.ModelUnavailable as exc:
        raise GradcheckUsageError(str(exc)) from None
    shape = parse_shape(input_shape)
    hyper = parse_settings(cls, name, settings)
    rows = sanity.all_checks(cls, shape, num_classes, hyper, seed)
    return format_table(name, shape, num_classes, rows), all(r.passed for r in rows)


def format_table(name: str, shape: tuple[int, ...], num_classes: int,
                 rows: Sequence[sanity.Check]) -> str:
    head = ("check", "value", "result", "")
    body = [(r.name, r.value, "pass" if r.passed else "FAIL", r.note) for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(3)]
    lines = [f"model {name}: input shape {shape}, {num_classes} classes"]
    for row in [head, *body]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True))
                     + "  " + row[3])
    failed = sum(not r.passed for r in rows)
    lines.append("all checks passed" if not failed else f"{failed} check(s) FAILED")
    return "\n".join(line.rstrip() for line in lines)
