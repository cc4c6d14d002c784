"""Coarse to fine: the next stage's ranges, and flags for optima on a range's edge.

Pure functions over distributions and trial parameters (no I/O). Every numeric
range is handled in its own scale: log10 space for log ranges, so "the edge
zone", "the margin" and "half the width" mean the same thing for a learning
rate over 1e-6..1e-1 as for dropout over 0..0.5.

Hard limits are the hyperparameter table's (``SPEC``: dropout in [0, 1),
learning_rate > 0, hidden_size >= 1, ...) and the user's ``min``/``max``. A
refined range never crosses them and stays strictly inside open ones.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

from coordinator.config import StageConfig
from coordinator.space import Choice, Dist, Range
from worker.nn.hyper import SPEC

EXTEND = 0.5  # an edge optimum pushes that edge out by this fraction of the width
MIN_WIDTH = 0.05  # a refined range keeps at least this fraction of the current width
# ... and never less than this many decades (log) or this fraction of its magnitude
# (linear), so that many stages in a row cannot shrink it to floating-point noise
MIN_DECADES = 1e-3
MIN_RELATIVE = 1e-6
OPEN_GAP = 0.01  # distance kept from an open limit, as a fraction of the current width
DEFAULT_EDGE = next(f.default for f in dataclasses.fields(StageConfig) if f.name == "edge")


@dataclass(frozen=True)
class BoundaryFlag:
    """A stage's best ``value`` of ``param`` lies in the edge zone of ``[low, high]``.

    ``at_limit``: that edge is a hard limit (``limit`` says which, e.g. ">= 0"), so
    the range cannot widen there. ``scale`` only affects how the message prints.
    """

    param: str
    value: float
    low: float
    high: float
    side: str  # "low" | "high"
    at_limit: bool
    scale: str = "linear"
    limit: str = ""


@dataclass(frozen=True)
class _Bound:
    value: float
    open: bool
    text: str  # for messages, e.g. ">= 0" or "<= 0.3, the config's max"


def refine(space: Mapping[str, Dist], kept: Sequence[Mapping[str, Any]],
           best: Mapping[str, Any], stage: StageConfig) -> dict[str, Dist]:
    """The next stage's space, shaped by this stage's ``kept`` trials and its ``best``.

    A range spans the kept values padded by ``stage.margin`` x its width, within the
    current range, except that a best value in the edge zone (``stage.edge``) pushes
    that edge out by half the width unless a hard limit stops it. A choice keeps
    the values the kept trials (and the best) used. No kept trials: unchanged.
    """
    if not kept:
        return dict(space)
    out: dict[str, Dist] = {}
    for name, dist in space.items():
        values = [p.get(name) for p in kept] + [best.get(name)]
        if isinstance(dist, Choice):
            out[name] = _refine_choice(dist, values)
        else:
            numbers = [float(v) for v in values if _is_number(v)]
            value = best.get(name)
            best_value = float(value) if _is_number(value) else None
            out[name] = _refine_range(name, dist, numbers, best_value, stage) if numbers else dist
    return out


def boundary_flags(space: Mapping[str, Dist], best: Mapping[str, Any],
                   edge: float | None = None) -> list[BoundaryFlag]:
    """Numeric parameters whose ``best`` value lies in the outer ``edge`` of their range.

    ``edge`` defaults to ``StageConfig.edge``; pass the stage's own.
    """
    edge = DEFAULT_EDGE if edge is None else edge
    flags = []
    for name, dist in space.items():
        value = best.get(name)
        if not isinstance(dist, Range) or not _is_number(value):
            continue
        side = boundary_side(dist, float(value), edge)
        if side is None:
            continue
        bound = _hard_limits(name, dist)[0 if side == "low" else 1]
        flags.append(BoundaryFlag(name, value, dist.low, dist.high, side,
                                  is_at_limit(name, dist, side), dist.scale,
                                  bound.text if bound else ""))
    return flags


def boundary_side(dist: Range, value: float, edge: float) -> str | None:
    """``"low"``/``"high"`` if ``value`` lies in that edge zone of ``dist`` (in its scale)."""
    lo, hi = _scaled(dist, dist.low), _scaled(dist, dist.high)
    x, zone = _scaled(dist, value), edge * (hi - lo)
    if x >= hi - zone:
        return "high"
    if x <= lo + zone:
        return "low"
    return None


def flag_message(flag: BoundaryFlag) -> str:
    """One warning line a person will notice."""
    integer = all(isinstance(x, int) for x in (flag.low, flag.high))
    fmt = _fmt_e if flag.scale == "log" and not integer else _fmt_g
    head = (f"{flag.param}: best {fmt(flag.value)} is at the {flag.side} edge of "
            f"[{fmt(flag.low)}, {fmt(flag.high)}]")
    if flag.at_limit:
        limit = flag.limit or _spec_limit_text(flag)
        return f"{head}, which is its hard limit ({limit})" if limit else \
            f"{head}, which is its hard limit"
    where = "above" if flag.side == "high" else "below"
    return f"{head} — the optimum may lie {where}; widen the range"


def _spec_limit_text(flag: BoundaryFlag) -> str:
    """SPEC's limit on the flag's side if the edge sits on it (for flags rebuilt from rows)."""
    spec = SPEC.get(flag.param)
    if spec is None:
        return ""
    limit, is_open = (spec.low, spec.low_open) if flag.side == "low" else (spec.high,
                                                                           spec.high_open)
    edge = flag.low if flag.side == "low" else flag.high
    if limit is None or edge != limit:
        return ""
    return f"{'>' if flag.side == 'low' else '<'}{'' if is_open else '='} {limit:g}"


# ---------------------------------------------------------------------------- ranges


def _refine_range(name: str, dist: Range, values: list[float], best: float | None,
                  stage: StageConfig) -> Range:
    lo_c, hi_c = _scaled(dist, dist.low), _scaled(dist, dist.high)
    width = hi_c - lo_c
    # values outside the current range (carried from an older one) count as its edge
    points = [min(max(_scaled(dist, v), lo_c), hi_c) for v in values]
    lo = max(min(points) - stage.margin * width, lo_c)
    hi = min(max(points) + stage.margin * width, hi_c)
    side = boundary_side(dist, best, stage.edge) if best is not None else None
    if side == "low" and not is_at_limit(name, dist, "low"):
        lo = lo_c - EXTEND * width
    if side == "high" and not is_at_limit(name, dist, "high"):
        hi = hi_c + EXTEND * width
    lim_lo, lim_hi = _scaled_limits(name, dist)
    lo, hi = max(lo, min(lim_lo, lo_c)), min(hi, max(lim_hi, hi_c))
    floor = MIN_DECADES if dist.scale == "log" else MIN_RELATIVE * max(abs(lo_c), abs(hi_c))
    lo, hi = _at_least(lo, hi, max(MIN_WIDTH * width, floor), min(lim_lo, lo_c),
                       max(lim_hi, hi_c))
    return _unscaled_range(name, dist, lo, hi)


def _refine_choice(dist: Choice, values: list[Any]) -> Choice:
    used = [v for v in values if v is not None and not isinstance(v, bool)]
    kept = tuple(v for v in dist.values if v in used)
    return Choice(kept) if kept else dist


def _at_least(lo: float, hi: float, width: float, lim_lo: float,
              lim_hi: float) -> tuple[float, float]:
    """Widen ``[lo, hi]`` about its middle to ``width``, shifted to stay in the limits."""
    if hi - lo >= width:
        return lo, hi
    mid = (lo + hi) / 2
    lo, hi = mid - width / 2, mid + width / 2
    if lo < lim_lo:
        lo, hi = lim_lo, hi + (lim_lo - lo)
    if hi > lim_hi:
        lo, hi = max(lo - (hi - lim_hi), lim_lo), lim_hi
    return lo, hi


def _unscaled_range(name: str, dist: Range, lo: float, hi: float) -> Range:
    """Back from scale space to values, rounded outward for integers, inside hard limits."""
    # an edge that did not move keeps its exact value (10 ** log10(x) need not be x)
    low = dist.low if lo == _scaled(dist, dist.low) else _unscaled(dist, lo)
    high = dist.high if hi == _scaled(dist, dist.high) else _unscaled(dist, hi)
    lower, upper = _hard_limits(name, dist)
    if dist.integer:
        int_lo, int_hi = _integer_limits(lower, upper)
        low = max(math.floor(_snap(low)), int_lo)
        high = min(math.ceil(_snap(high)), int_hi)
        if high <= low:  # a one-value range: take the next integer inside the limits
            low, high = (low, low + 1) if low + 1 <= int_hi else (high - 1, high)
    else:
        low, high = _inside(low, lower, +1), _inside(high, upper, -1)
        if dist.scale == "log":
            low = max(low, math.ulp(0.0))  # 10 ** x may underflow to 0
    if not low < high:  # unreachable with MIN_WIDTH > 0; never hand out a broken range
        return dist
    return dataclasses.replace(dist, low=low, high=high)


def _snap(x: float) -> float:
    """Undo log round-off before rounding to integers: 511.99999999999994 is 512."""
    r = round(x)
    return float(r) if abs(x - r) <= 1e-9 * max(1.0, abs(x)) else x


def _inside(x: float, bound: _Bound | None, direction: int) -> float:
    """``x`` moved (in ``direction``) to respect ``bound``: a lower (+1) or upper (-1) limit."""
    if bound is None:
        return x
    if direction > 0 and (x < bound.value or (bound.open and x <= bound.value)):
        return math.nextafter(bound.value, math.inf) if bound.open else bound.value
    if direction < 0 and (x > bound.value or (bound.open and x >= bound.value)):
        return math.nextafter(bound.value, -math.inf) if bound.open else bound.value
    return x


# ---------------------------------------------------------------------------- limits


def _hard_limits(name: str, dist: Range) -> tuple[_Bound | None, _Bound | None]:
    """The tighter of SPEC's and the user's limit on each side (None: unbounded)."""
    spec = SPEC.get(name)
    lows, highs = [], []
    if spec is not None and spec.low is not None:
        lows.append(_Bound(spec.low, spec.low_open,
                           f"{'>' if spec.low_open else '>='} {spec.low:g}"))
    if spec is not None and spec.high is not None:
        highs.append(_Bound(spec.high, spec.high_open,
                            f"{'<' if spec.high_open else '<='} {spec.high:g}"))
    if dist.min is not None:
        lows.append(_Bound(dist.min, False, f">= {dist.min:g}, the config's min"))
    if dist.max is not None:
        highs.append(_Bound(dist.max, False, f"<= {dist.max:g}, the config's max"))
    if dist.integer and dist.scale == "log":
        lows.append(_Bound(1, False, ">= 1 for int_log_uniform"))
    lower = max(lows, key=lambda b: (b.value, b.open), default=None)
    upper = min(highs, key=lambda b: (b.value, not b.open), default=None)
    return lower, upper


def _integer_limits(lower: _Bound | None, upper: _Bound | None) -> tuple[float, float]:
    """Closed integer limits (+-inf when unbounded)."""
    int_lo, int_hi = -math.inf, math.inf
    if lower is not None:
        int_lo = math.floor(lower.value) + 1 if lower.open else math.ceil(lower.value)
    if upper is not None:
        int_hi = math.ceil(upper.value) - 1 if upper.open else math.floor(upper.value)
    return int_lo, int_hi


def _scaled_limits(name: str, dist: Range) -> tuple[float, float]:
    """How far the range may reach, in its scale; open limits keep ``OPEN_GAP`` x width."""
    lower, upper = _hard_limits(name, dist)
    gap = OPEN_GAP * (_scaled(dist, dist.high) - _scaled(dist, dist.low))
    lo, hi = -math.inf, math.inf
    if dist.integer:
        int_lo, int_hi = _integer_limits(lower, upper)
        lo = _scaled(dist, int_lo) if int_lo > -math.inf else lo
        hi = _scaled(dist, int_hi) if int_hi < math.inf else hi
        return lo, hi
    if lower is not None:
        lo = _scaled(dist, lower.value) + (gap if lower.open else 0.0)
    if upper is not None:
        hi = _scaled(dist, upper.value) - (gap if upper.open else 0.0)
    return lo, hi


def is_at_limit(name: str, dist: Range, side: str) -> bool:
    """Whether a hard limit leaves no real room (``OPEN_GAP`` x width) past that edge."""
    lim_lo, lim_hi = _scaled_limits(name, dist)
    lo, hi = _scaled(dist, dist.low), _scaled(dist, dist.high)
    room = lo - lim_lo if side == "low" else lim_hi - hi
    return room <= OPEN_GAP * (hi - lo)


def _scaled(dist: Range, x: float) -> float:
    if dist.scale != "log":
        return float(x)
    return math.log10(x) if x > 0 else -math.inf


def _unscaled(dist: Range, x: float) -> float:
    return 10.0**x if dist.scale == "log" else x


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _fmt_g(x: float) -> str:
    return f"{x:g}"


def _fmt_e(x: float) -> str:
    """Short e-notation: 1e-06, 9.3e-02, 3.16e-05."""
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"
