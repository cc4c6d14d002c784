"""How boundary flags read: the flag record, its warning line, what was done about it.

Split from ``refine`` so that reports (``hpsweep status``/``best``, the dashboard) print
flags without importing the planning code (config, search space, NumPy): a status read
must start fast. ``refine`` re-exports these names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# SPEC's integer parameters (``tests/coordinator_tests/test_flagtext.py`` keeps this equal to
# ``worker.nn.hyper.SPEC``): formatting a value must not import that table, which reads the
# update rules' defaults and so loads NumPy on every ``hpsweep status``.
INTEGER_PARAMS = frozenset({"hidden_size", "depth", "batch_size", "schedule_every",
                            "schedule_patience"})


@dataclass(frozen=True)
class BoundaryFlag:
    """A stage's results point past the ``side`` edge of ``param``'s ``[low, high]``.

    ``value`` is the stage's best value of it (own trials only). ``reason`` says which
    evidence fired: ``trend`` (the best is the most extreme value and scores rise towards
    it), ``edge`` (too few trials for a trend: the best lies in the edge zone) or
    ``diverged`` (every trial diverged). ``at_limit``: that edge is a hard limit
    (``limit`` says which, e.g. ">= 0"), so the range cannot widen there. ``scale``
    only affects how the message prints.
    """

    param: str
    value: float
    low: float
    high: float
    side: str  # "low" | "high"
    at_limit: bool
    scale: str = "linear"
    limit: str = ""
    reason: str = ""


def flag_message(flag: BoundaryFlag, action: str = "") -> str:
    """One warning line a person will notice. ``action`` says what to do or what
    hpsweep did about it (default, for a user's own range: widen it)."""
    fmt = _formatter(flag)
    span = f"[{fmt(flag.low)}, {fmt(flag.high)}]"
    if flag.reason == "trend":
        head = (f"{flag.param}: scores rise towards the {flag.side} edge of {span} "
                f"(best {fmt(flag.value)})")
    elif flag.reason == "diverged":
        head = f"{flag.param}: every trial diverged in {span}"
    else:
        head = f"{flag.param}: best {fmt(flag.value)} is at the {flag.side} edge of {span}"
    if flag.at_limit:
        limit = flag.limit or _spec_limit_text(flag)
        return f"{head}, which is its hard limit ({limit})" if limit else \
            f"{head}, which is its hard limit"
    where = "above" if flag.side == "high" else "below"
    return f"{head} — the optimum may lie {where}; {action or 'widen the range'}"


def flag_action(flag: BoundaryFlag, stage_idx: int, n_stages: int, sweep_name: str,
                next_range: Mapping[str, Any] | None) -> str:
    """What hpsweep did about a flag of stage ``stage_idx`` (``next_range``: the next
    stage's range of the parameter, a ``stage_ranges`` row, if that stage exists), or
    what the user can do: widen their own range, or extend a sweep that ended on it."""
    if flag.at_limit:
        return ""
    if next_range is not None:
        if next_range.get("scale") == "choice":
            return ""
        whole = bool(next_range.get("integer"))

        def fmt(x: float) -> str:
            return str(round(x)) if whole else format_value(flag.param, x, flag.scale)

        span = f"[{fmt(next_range['low'])}, {fmt(next_range['high'])}]"
        moved = next_range["high"] > flag.high if flag.side == "high" else \
            next_range["low"] < flag.low
        return (f"stage {stage_idx + 1} extended the range to {span}" if moved else
                f"stage {stage_idx + 1} sampled {span}")
    if stage_idx < n_stages - 1:
        return f"stage {stage_idx + 1} extends the range"
    if stage_idx == 0:
        return f"widen the range in the config (or `hpsweep extend {sweep_name}`)"
    return (f"this was the last stage: `hpsweep extend {sweep_name}` adds a stage whose "
            "range moves past this edge")


def format_value(param: str, value: float, scale: str = "linear") -> str:
    """A parameter's value as people write it: integers as integers, log ranges in
    short e-notation, others with ``g``."""
    if param in INTEGER_PARAMS or isinstance(value, int):
        return str(round(value))
    return _fmt_e(value) if scale == "log" else _fmt_g(value)


def _formatter(flag: BoundaryFlag) -> Callable[[float], str]:
    return lambda x: format_value(flag.param, x, flag.scale)


def _spec_limit_text(flag: BoundaryFlag) -> str:
    """SPEC's limit on the flag's side if the edge sits on it (for flags rebuilt from rows)."""
    spec = _spec(flag.param)
    if spec is None:
        return ""
    limit, is_open = (spec.low, spec.low_open) if flag.side == "low" else (spec.high,
                                                                           spec.high_open)
    edge = flag.low if flag.side == "low" else flag.high
    if limit is None or edge != limit:
        return ""
    return f"{'>' if flag.side == 'low' else '<'}{'' if is_open else '='} {limit:g}"


def _spec(param: str) -> Any:
    """SPEC's entry for ``param``, imported only when a flag is printed: the table reads
    the update rules' defaults, which loads NumPy, and a status read without flags must
    not (``tests/storage_tests/test_plain.py``)."""
    from worker.nn.hyper import SPEC

    return SPEC.get(param)


def _fmt_g(x: float) -> str:
    return f"{x:g}"


def _fmt_e(x: float) -> str:
    """Short e-notation: 1e-06, 9.3e-02, 3.16e-05."""
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"
