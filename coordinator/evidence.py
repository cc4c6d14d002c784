"""What a stage's results say about where an optimum lies, and whether anything learned.

Pure functions, no I/O. ``refine.boundary_flags`` asks ``edge_side`` whether the
trials of one stage point past an edge of a parameter's range; ``is_at_chance``
tells a stage whose best trial is indistinguishable from guessing one class.

The rule reads the whole stage, not one draw: a side is flagged when the best
trial is (one of) the most extreme sampled values on that side (all but
``n // 6`` others lie on its inner side) *and* the trials' scores trend towards
that side (a one-sided Spearman rank correlation beyond its 5 % critical value,
``TREND_Z / sqrt(n - 1)``), unless a parabola fitted to the score ranks peaks
well inside the best value. Most trials diverging, all on one side of the best,
counts as a trend away from them. A best value that
merely lands near an edge is not enough (a flat parameter puts its best there
one time in five), and a best value that falls short of an empty edge zone is
not an excuse (the zone of a 12-trial stage is empty a third of the time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

TREND_Z = 1.645  # one-sided 5 % normal quantile: the Spearman test's critical value x sqrt(n-1)
MIN_TREND_TRIALS = 4  # below this a rank correlation says nothing: fall back to the edge zone
PEAK_INSIDE = 0.2  # a fitted peak this far inside the best value (range = 1) vetoes a flag
CHANCE_Z = 3.0  # "indistinguishable from chance": within this many binomial sds of it


@dataclass(frozen=True)
class Point:
    """One trial of a stage for one parameter: its value in the range's scale, normalised
    to [0, 1] over the range, and its ``utility`` (higher is better; every diverged trial
    shares the lowest)."""

    x: float
    utility: float
    diverged: bool = False


def edge_side(points: Sequence[Point], best: int | None, edge: float) -> str | None:
    """``"high"``/``"low"`` when ``points`` say the optimum may lie past that side.

    ``best`` indexes the stage's best scored trial in ``points`` (None: no trial
    scored). With fewer than ``MIN_TREND_TRIALS`` points only the old edge-zone
    rule is left: the best value within the outer ``edge`` fraction of the range.
    """
    if best is None or not points:
        return None
    n, x_best = len(points), points[best].x
    if n < MIN_TREND_TRIALS:
        return "high" if x_best >= 1 - edge else "low" if x_best <= edge else None
    slack = max(1, n // 6)  # the best may be a runner-up extreme (noise), not deeper
    above = sum(p.x > x_best for p in points)
    below = sum(p.x < x_best for p in points)
    xs, us = [p.x for p in points], [p.utility for p in points]
    rho = spearman(xs, us)
    crit = TREND_Z / math.sqrt(n - 1)
    peak = quadratic_peak(xs, _ranks(us))
    diverged = [p.x for p in points if p.diverged]
    # most trials diverged, all beyond the best on one side: the other side is the way out
    exploding = 2 * len(diverged) >= n
    if above <= slack and (rho >= crit or (exploding and max(diverged) < x_best)) and not (
            peak is not None and peak < x_best - PEAK_INSIDE):
        return "high"
    if below <= slack and (rho <= -crit or (exploding and min(diverged) > x_best)) and not (
            peak is not None and peak > x_best + PEAK_INSIDE):
        return "low"
    return None


def quadratic_peak(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Where a least-squares parabola through (x, y) peaks, if it opens downwards."""
    n = len(xs)
    if n < 3:
        return None
    sums = [sum(x**k for x in xs) for k in range(5)]
    rhs = [sum(y * x**k for x, y in zip(xs, ys, strict=True)) for k in range(3)]
    m = [[sums[i + j] for j in range(3)] + [rhs[i]] for i in range(3)]
    for col in range(3):  # Gauss-Jordan on the 3x3 normal equations
        pivot = max(range(col, 3), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(3):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [a - f * b for a, b in zip(m[r], m[col], strict=True)]
    b, c = m[1][3] / m[1][1], m[2][3] / m[2][2]
    return -b / (2 * c) if c < 0 else None


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 when either side is constant."""
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def chance_level(n_classes: int) -> float:
    """Accuracy of guessing one class of ``n_classes`` balanced ones."""
    return 1.0 / max(1, n_classes)


def chance_threshold(n_classes: int, n_val: int) -> float:
    """The validation accuracy a trial must beat to be distinguishable from chance:
    ``CHANCE_Z`` binomial standard deviations above ``chance_level``."""
    p = chance_level(n_classes)
    return p + CHANCE_Z * math.sqrt(p * (1 - p) / max(1, n_val))


def is_at_chance(best_val_acc: float | None, n_classes: int, n_val: int) -> bool:
    """No trial beats chance: no scored trial at all, or the best within noise of it."""
    return best_val_acc is None or best_val_acc <= chance_threshold(n_classes, n_val)
