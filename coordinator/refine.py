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
from coordinator.evidence import MIN_TREND_TRIALS, Point, edge_side
from coordinator.flagtext import BoundaryFlag
from coordinator.flagtext import flag_action as flag_action  # re-exported: older imports
from coordinator.flagtext import flag_message as flag_message
from coordinator.flagtext import format_value as format_value
from coordinator.space import Choice, Dist, Range
from worker.nn.hyper import SPEC

EXTEND = 0.5  # a flagged side moves out by this fraction of the width the first time
# ... and by the whole width, at least this many decades, doubled per repeat, when the flag
# repeats or nothing in the stage beat chance
CHANCE_DECADES = 3.0
MIN_WIDTH = 0.05  # a refined range keeps at least this fraction of the current width
# ... and never less than this many decades (log) or this fraction of its magnitude
# (linear), so that many stages in a row cannot shrink it to floating-point noise
MIN_DECADES = 1e-3
MIN_RELATIVE = 1e-6
OPEN_GAP = 0.01  # distance kept from an open limit, as a fraction of the current width
Scored = tuple[Mapping[str, Any], "float | None"]  # params, utility (None: diverged)
DEFAULT_EDGE = next(f.default for f in dataclasses.fields(StageConfig) if f.name == "edge")


@dataclass(frozen=True)
class _Bound:
    value: float
    open: bool
    text: str  # for messages, e.g. ">= 0" or "<= 0.3, the config's max"


@dataclass(frozen=True)
class Travel:
    """How the flagged sides move: ``sides`` maps a parameter to the sides its flags
    extend (hard limits already excluded), ``repeats`` counts the stages in a row just
    before this one that flagged the same side (each doubles the push), and
    ``at_chance``: nothing in the stage beat chance, so its values locate nothing."""

    sides: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    repeats: Mapping[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    at_chance: bool = False


def travel_of(flags: Sequence[BoundaryFlag], history: Sequence[tuple[int, str, str]],
              stage_idx: int, at_chance: bool = False) -> Travel:
    """The ``Travel`` for a stage's ``flags``; ``history``: (stage idx, param, side) of
    the sweep's earlier flags that were not at a limit."""
    sides: dict[str, set[str]] = {}
    for f in flags:
        if not f.at_limit:
            sides.setdefault(f.param, set()).add(f.side)
    seen = set(history)
    repeats = {}
    for param, params_sides in sides.items():
        for side in params_sides:
            k = 0
            while (stage_idx - 1 - k, param, side) in seen:
                k += 1
            repeats[(param, side)] = k
    return Travel({p: frozenset(v) for p, v in sides.items()}, repeats, at_chance)


def refine(space: Mapping[str, Dist], kept: Sequence[Mapping[str, Any]],
           best: Mapping[str, Any], stage: StageConfig,
           travel: Travel | None = None) -> dict[str, Dist]:
    """The next stage's space, shaped by this stage's ``kept`` trials and its ``best``.

    A range spans the kept values padded by ``stage.margin`` x its width, within the
    current range. A flagged side (``travel.sides``; without ``travel``, a best value in
    the edge zone ``stage.edge``) is pushed out by ``EXTEND`` x the width; when the flag
    repeats, by the width (at least ``CHANCE_DECADES``) x 2 per stage in a row that
    flagged it before; never past a hard limit. When the
    stage is ``at_chance`` its kept values mean nothing: unflagged ranges stay as they
    are and a flagged one moves past its edge (``_travel_range``). A choice keeps the
    values the kept trials (and the best) used. No kept trials: unchanged.
    """
    if not kept and not (travel and travel.at_chance):
        return dict(space)
    out: dict[str, Dist] = {}
    for name, dist in space.items():
        values = [p.get(name) for p in kept] + [best.get(name)]
        if isinstance(dist, Choice):
            out[name] = dist if travel and travel.at_chance else _refine_choice(dist, values)
            continue
        numbers = [float(v) for v in values if _is_number(v)]
        value = best.get(name)
        best_value = float(value) if _is_number(value) else None
        if travel is None:
            side = boundary_side(dist, best_value, stage.edge) if best_value is not None \
                else None
            sides = frozenset([side] if side else [])
            travel_here = Travel({name: sides})
        else:
            travel_here = travel
        if travel_here.at_chance:
            out[name] = _travel_range(name, dist, travel_here, stage)
        else:
            out[name] = _refine_range(name, dist, numbers, travel_here, stage) if numbers \
                else dist
    return out


def boundary_flags(space: Mapping[str, Dist], trials: Sequence[Scored],
                   edge: float | None = None) -> list[BoundaryFlag]:
    """Numeric parameters whose stage results point past an edge of their range.

    ``trials`` are the stage's own trials, best first (``rank.scored_trials``): a
    value outside a parameter's range (a carried trial's, drawn from an older range)
    is left out of that parameter's evidence. ``edge`` (default ``StageConfig.edge``)
    only matters for stages too small to show a trend (``evidence.edge_side``).
    Every trial diverged: ``learning_rate`` is flagged low (the notes' first
    suspect for an exploding loss), nothing else.
    """
    edge = DEFAULT_EDGE if edge is None else edge
    flags = []
    for name, dist in space.items():
        if not isinstance(dist, Range):
            continue
        points, values, best = _points(dist, name, trials)
        reason = "trend"
        if best is None and points and name == "learning_rate" and all(
                p.diverged for p in points):
            side, best, reason = "low", min(range(len(points)), key=lambda i: points[i].x), \
                "diverged"
        else:
            side = edge_side(points, best, edge)
            if side is not None and len(points) < MIN_TREND_TRIALS:
                reason = "edge"
        if side is None or best is None:
            continue
        bound = _hard_limits(name, dist)[0 if side == "low" else 1]
        flags.append(BoundaryFlag(name, values[best], dist.low, dist.high, side,
                                  is_at_limit(name, dist, side), dist.scale,
                                  bound.text if bound else "", reason))
    return flags


def _points(dist: Range, name: str,
            trials: Sequence[Scored]) -> tuple[list[Point], list[float], int | None]:
    """The trials inside ``dist`` as evidence points, their values, and the best's index."""
    lo, hi = _scaled(dist, dist.low), _scaled(dist, dist.high)
    slack = 1e-9 * max(1.0, abs(lo), abs(hi))
    points, values, best = [], [], None
    for params, utility in trials:
        value = params.get(name)
        if not _is_number(value):
            continue
        x = _scaled(dist, float(value))
        if not lo - slack <= x <= hi + slack:
            continue  # carried from another range: it says nothing about this one
        if utility is not None and (best is None or utility > points[best].utility):
            best = len(points)
        points.append(Point((x - lo) / (hi - lo), -1.0 if utility is None else utility,
                            diverged=utility is None))
        values.append(value)
    return points, values, best


def boundary_side(dist: Range, value: float, edge: float) -> str | None:
    """``"low"``/``"high"`` if ``value`` lies in that edge zone of ``dist`` (in its scale)."""
    lo, hi = _scaled(dist, dist.low), _scaled(dist, dist.high)
    x, zone = _scaled(dist, value), edge * (hi - lo)
    if x >= hi - zone:
        return "high"
    if x <= lo + zone:
        return "low"
    return None


# ---------------------------------------------------------------------------- ranges


def _push(name: str, dist: Range, travel: Travel, side: str) -> float:
    """How far (in scale units) a flagged side moves; 0 when it is not flagged."""
    if side not in travel.sides.get(name, ()) or is_at_limit(name, dist, side):
        return 0.0
    width = _scaled(dist, dist.high) - _scaled(dist, dist.low)
    repeats = travel.repeats.get((name, side), 0)
    base = EXTEND * width
    # nothing learned, or the last push did not bracket the optimum: leave decisively
    if travel.at_chance or repeats:
        base = max(width, CHANCE_DECADES) if dist.scale == "log" else width
    return base * 2**repeats


def _refine_range(name: str, dist: Range, values: list[float], travel: Travel,
                  stage: StageConfig) -> Range:
    lo_c, hi_c = _scaled(dist, dist.low), _scaled(dist, dist.high)
    width = hi_c - lo_c
    # values outside the current range (carried from an older one) count as its edge
    points = [min(max(_scaled(dist, v), lo_c), hi_c) for v in values]
    lo = max(min(points) - stage.margin * width, lo_c)
    hi = min(max(points) + stage.margin * width, hi_c)
    push_lo, push_hi = (_push(name, dist, travel, s) for s in ("low", "high"))
    lo, hi = (lo_c - push_lo if push_lo else lo), (hi_c + push_hi if push_hi else hi)
    return _bounded_range(name, dist, lo, hi)


def _travel_range(name: str, dist: Range, travel: Travel, stage: StageConfig) -> Range:
    """At chance: a flagged range moves past its flagged edge (keeping a margin of the old
    range); an unflagged one stays as it is."""
    lo_c, hi_c = _scaled(dist, dist.low), _scaled(dist, dist.high)
    margin = stage.margin * (hi_c - lo_c)
    push_lo, push_hi = (_push(name, dist, travel, s) for s in ("low", "high"))
    if push_lo and push_hi:
        lo, hi = lo_c - push_lo, hi_c + push_hi
    elif push_hi:
        lo, hi = hi_c - margin, hi_c + push_hi
    elif push_lo:
        lo, hi = lo_c - push_lo, lo_c + margin
    else:
        return dist
    return _bounded_range(name, dist, lo, hi)


def _bounded_range(name: str, dist: Range, lo: float, hi: float) -> Range:
    """``[lo, hi]`` (in scale) within the hard limits, no narrower than the floors."""
    lo_c, hi_c = _scaled(dist, dist.low), _scaled(dist, dist.high)
    width = hi_c - lo_c
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
