"""Search-space distributions: a numeric ``Range`` and a categorical ``Choice``.

The config spellings map onto two types (``DIST_NAMES``): ``uniform`` and
``log_uniform`` are float ranges on a linear or log scale, ``int_uniform`` and
``int_log_uniform`` the same with integer values, ``choice`` a list of values.
Log ranges are sampled uniformly in log space (``10 ** uniform(-6, 1)``), as the
CS231n notes recommend for scale parameters such as the learning rate.

Samples are plain Python ``int``/``float``/``str`` (never NumPy scalars): they go
to JSON and SQL unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from numbers import Real
from typing import Any

import numpy as np

from coordinator.checks import BAD, Problems, check_keys, hyper_value, number, show, suggest
from worker.nn.hyper import SPEC, ParamSpec

Value = float | int | str

# config spelling -> (scale, integer); "choice" is the categorical one.
DIST_NAMES: dict[str, tuple[str, bool]] = {
    "uniform": ("linear", False),
    "log_uniform": ("log", False),
    "int_uniform": ("linear", True),
    "int_log_uniform": ("log", True),
}
CHOICE = "choice"
SCALES = ("linear", "log")


class RangeError(ValueError):
    """A broken range: ``key`` names the offending bound ("" for the pair), ``rule`` says why."""

    def __init__(self, key: str, rule: str) -> None:
        self.key, self.rule = key, rule
        super().__init__(f"{key}: {rule}" if key else rule)


def _number(value: Any, what: str) -> float:
    """``value`` as a finite float; ValueError otherwise (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, Real | Decimal):
        raise RangeError(what, f"expected a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise RangeError(what, f"expected a finite number, got {value!r}")
    return x


@dataclass(frozen=True)
class Range:
    """Numeric range ``[low, high]`` on a ``linear`` or ``log`` scale, optionally integer.

    ``min``/``max`` are optional hard limits declared by the user (config keys
    ``min``/``max``): refinement never moves the range beyond them.
    """

    low: float
    high: float
    scale: str = "linear"
    integer: bool = False
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise RangeError("scale", f"expected one of {', '.join(SCALES)}, got {self.scale!r}")
        cast = int if self.integer else float
        given = {"low": self.low, "high": self.high}
        for name in ("low", "high", "min", "max"):
            raw = getattr(self, name)
            if raw is None and name in ("min", "max"):
                continue
            x = _number(raw, name)
            if self.integer and not x.is_integer():
                raise RangeError(name, f"expected an integer, got {raw!r}")
            object.__setattr__(self, name, cast(x))
        object.__setattr__(self, "integer", bool(self.integer))
        # The rules of a range, checked here only (the config reader reports these).
        if self.scale == "log" and self.low <= 0:
            raise RangeError("low", f"must be > 0 for {self.dist}, got {given['low']!r}")
        if self.low >= self.high:
            raise RangeError("", f"low must be < high, got low {self.low!r} >= high "
                                 f"{self.high!r}")
        if self.min is not None and self.low < self.min:
            raise RangeError("low", f"must be >= min ({self.min!r}), got {self.low!r}")
        if self.max is not None and self.high > self.max:
            raise RangeError("high", f"must be <= max ({self.max!r}), got {self.high!r}")

    @property
    def dist(self) -> str:
        """The config spelling of this range (``log_uniform``, ``int_uniform``, ...)."""
        return ("int_" if self.integer else "") + ("log_uniform" if self.scale == "log" else
                                                   "uniform")

    def sample(self, rng: np.random.Generator) -> float | int:
        """One value; log ranges uniformly in log10 space, integers inclusive of both ends."""
        if self.integer and self.scale == "linear":
            return int(rng.integers(self.low, self.high + 1))
        return self._from_unit([rng.random()])[0]

    @property
    def from_unit_draws(self) -> bool:
        """Whether a value is one uniform draw on [0, 1) (``rng.random()``) transformed:
        every range but a linear integer one, whose ``rng.integers`` draws bits its own way."""
        return not (self.integer and self.scale == "linear")

    def _from_unit(self, u: Any) -> list[Any]:
        """The values of uniform draws ``u`` (a sequence or an array): what ``sample``
        returns for each, computed for a whole array at once. ``lo + span * u`` is the
        arithmetic of NumPy's own ``uniform`` (bit for bit: values sampled before this
        path existed are unchanged); the powers stay Python's own ``10 ** x`` per value."""
        lo, hi = self.low, self.high
        if self.scale == "linear":
            x = (lo + (hi - lo) * np.asarray(u, dtype=float)).tolist()
            return [float(min(max(v, lo), hi)) for v in x]
        if self.integer:
            # log-uniform over [low - 0.5, high + 0.5] then round: every integer gets its
            # share of log space, the ends included (low >= 1 so low - 0.5 > 0)
            a, b = math.log10(lo - 0.5), math.log10(hi + 0.5)
            e = (a + (b - a) * np.asarray(u, dtype=float)).tolist()
            return [int(min(max(round(10 ** v), lo), hi)) for v in e]
        a, b = math.log10(lo), math.log10(hi)
        e = (a + (b - a) * np.asarray(u, dtype=float)).tolist()
        return [float(min(max(10 ** v, lo), hi)) for v in e]

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a number in ``[low, high]`` (an integer for integer ranges)."""
        if isinstance(value, bool) or not isinstance(value, Real):
            return False
        x = float(value)
        if self.integer and not x.is_integer():
            return False
        return self.low <= x <= self.high

    def to_dict(self) -> dict[str, Any]:
        """The config form, e.g. ``{"dist": "log_uniform", "low": 1e-06, "high": 0.1}``."""
        d: dict[str, Any] = {"dist": self.dist, "low": self.low, "high": self.high}
        if self.min is not None:
            d["min"] = self.min
        if self.max is not None:
            d["max"] = self.max
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Range:
        scale, integer = DIST_NAMES[d["dist"]]
        return cls(d["low"], d["high"], scale, integer, d.get("min"), d.get("max"))

    def to_row(self) -> dict[str, Any]:
        """A flat row for the ``stage_ranges`` table (user ``min``/``max`` are not in it)."""
        return {"low": float(self.low), "high": float(self.high), "scale": self.scale,
                "integer": self.integer, "choices": None}


@dataclass(frozen=True)
class Choice:
    """A categorical parameter: one of ``values`` (strings or numbers), sampled uniformly."""

    values: tuple[Value, ...]

    def __post_init__(self) -> None:
        values = tuple(self.values)
        if not values:
            raise ValueError("values: expected at least one value, got none")
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise ValueError(f"values[{i}]: expected a string or a number, got {v!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"values[{i}]: expected a finite number, got {v!r}")
            if v in values[:i]:
                raise ValueError(f"values[{i}]: duplicate value {v!r}")
        object.__setattr__(self, "values", values)

    dist = CHOICE

    def sample(self, rng: np.random.Generator) -> Value:
        return self.values[int(rng.integers(len(self.values)))]

    def contains(self, value: Any) -> bool:
        return not isinstance(value, bool) and value in self.values

    def to_dict(self) -> dict[str, Any]:
        return {"dist": CHOICE, "values": list(self.values)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Choice:
        return cls(tuple(d["values"]))

    def to_row(self) -> dict[str, Any]:
        """A flat row for ``stage_ranges``: the values as JSON text in ``choices``."""
        return {"low": None, "high": None, "scale": CHOICE, "integer": False,
                "choices": json.dumps(list(self.values))}


Dist = Range | Choice


def dist_from_dict(d: Mapping[str, Any]) -> Dist:
    """Inverse of ``to_dict`` for either type; ValueError for an unknown ``dist``."""
    name = d.get("dist")
    if name == CHOICE:
        return Choice.from_dict(d)
    if name in DIST_NAMES:
        return Range.from_dict(d)
    raise ValueError(f"dist: unknown distribution {name!r}")


def dist_from_row(row: Mapping[str, Any], base: Dist | None = None) -> Dist:
    """Inverse of ``to_row``. Extra keys (``stage_id``, ``param``) are ignored.

    ``base`` is the sweep config's distribution for the same parameter: its
    user-declared ``min``/``max`` carry over (rows do not store them).
    """
    if row["scale"] == CHOICE:
        return Choice(tuple(json.loads(row["choices"])))
    limits = (base.min, base.max) if isinstance(base, Range) else (None, None)
    return Range(row["low"], row["high"], row["scale"], bool(row.get("integer") or False),
                 *limits)


def space_from_rows(rows: Iterable[Mapping[str, Any]],
                    base: Mapping[str, Dist] | None = None) -> dict[str, Dist]:
    """A space from ``stage_ranges`` rows (each with a ``param`` key), limits from ``base``."""
    base = base or {}
    return {row["param"]: dist_from_row(row, base.get(row["param"])) for row in rows}


def sample_configs(space: Mapping[str, Dist], n: int,
                   rng: np.random.Generator) -> list[dict[str, Value]]:
    """``n`` configurations drawn from ``space``: same generator state, same samples.

    Parameters are drawn in sorted name order, trial after trial, so the result
    does not depend on the mapping's order and the first k of n equal those of k.
    """
    return list(iter_configs(space, n, rng))


def iter_configs(space: Mapping[str, Dist], n: int,
                 rng: np.random.Generator) -> Iterator[dict[str, Value]]:
    """``sample_configs`` one configuration at a time (a launch of millions streams them).

    When every range is drawn from one uniform draw (``Range.from_unit_draws``: no choice,
    no linear integer range), ``CONFIG_BLOCK`` configurations are drawn at once: the same
    draws in the same order, so the same values as one at a time, ~10x faster."""
    names = sorted(space)
    if not all(isinstance(space[k], Range) and space[k].from_unit_draws for k in names):
        for _ in range(n):
            drawn = {name: space[name].sample(rng) for name in names}
            yield {name: drawn[name] for name in space}
        return
    ranges = [(name, space[name]) for name in names]
    for start in range(0, n, CONFIG_BLOCK):
        u = rng.random((min(CONFIG_BLOCK, n - start), len(names)))  # row i: trial i's draws
        cols = {name: r._from_unit(u[:, j]) for j, (name, r) in enumerate(ranges)}
        for i in range(u.shape[0]):
            yield {name: cols[name][i] for name in space}


CONFIG_BLOCK = 2_048


# ---------------------------------------------------------------------------- space


def read_space(chk: Problems, path: str, raw: Any,
               table: Mapping[str, ParamSpec] = SPEC) -> Any:
    """The searched hyperparameters; ``table``: the names the sweep's model takes."""
    if not isinstance(raw, Mapping) or not raw:
        chk.add(path, f"expected a mapping of parameters to search, got {show(raw)}")
        return BAD
    out: dict[str, Dist] = {}
    for name, entry in raw.items():
        here = f"{path}.{name}"
        spec = table.get(name)
        if spec is None:
            chk.add(here, f"unknown hyperparameter {name!r}{suggest(name, table)}")
        elif not spec.searchable:
            chk.add(here, f"cannot be searched ({spec.help}); fix it under train")
        elif not isinstance(entry, Mapping):
            chk.add(here, f"expected a mapping with 'dist', got {show(entry)}")
        else:
            dist = _read_dist(chk, here, spec, entry)
            if dist is not BAD:
                out[name] = dist
    return out


def _read_dist(chk: Problems, path: str, spec: ParamSpec, entry: Mapping) -> Any:
    name = entry.get("dist")
    valid = ", ".join(sorted([*DIST_NAMES, CHOICE]))
    if name == CHOICE:
        return _read_choice(chk, path, spec, entry)
    if name in DIST_NAMES:
        return _read_range(chk, path, spec, entry, name)
    if "dist" not in entry:
        chk.add(f"{path}.dist", f"missing required key; expected one of {valid}")
    else:
        hint = suggest(name, [*DIST_NAMES, CHOICE])
        chk.add(f"{path}.dist", f"unknown distribution {show(name)}; expected one of "
                                f"{valid}{hint}")
    return BAD


def _read_choice(chk: Problems, path: str, spec: ParamSpec, entry: Mapping) -> Any:
    check_keys(chk, path, entry, ("dist", "values"), required=("values",))
    raw = entry.get("values")
    if "values" in entry and (not isinstance(raw, list) or not raw):
        chk.add(f"{path}.values", f"expected a non-empty list, got {show(raw)}")
    if not isinstance(raw, list) or not raw:
        return BAD
    values: list[Any] = []
    for i, v in enumerate(raw):
        x = hyper_value(chk, f"{path}.values[{i}]", spec, v)
        if x is not BAD and x in values:
            chk.add(f"{path}.values[{i}]", f"duplicate value, got {show(v)}")
            x = BAD
        values.append(x)
    return BAD if BAD in values else Choice(tuple(values))


def _read_range(chk: Problems, path: str, spec: ParamSpec, entry: Mapping, dist: str) -> Any:
    scale, integer = DIST_NAMES[dist]
    check_keys(chk, path, entry, ("dist", "low", "high", "min", "max"),
               required=("low", "high"))
    if spec.kind is str:
        chk.add(f"{path}.dist", f"{spec.name} is categorical; use choice, got {dist}")
        return BAD
    if spec.kind is int and not integer:
        chk.add(f"{path}.dist", f"{spec.name} takes integers; use int_uniform or "
                                f"int_log_uniform, got {dist}")
        return BAD
    what = "an integer" if integer else "a number"
    got: dict[str, Any] = {}
    for key in ("low", "high", "min", "max"):
        if key in entry:
            got[key] = number(chk, f"{path}.{key}", entry[key], integer=integer, what=what)
    if BAD in got.values() or "low" not in got or "high" not in got:
        return BAD
    before = len(chk.problems)
    for key in ("low", "high"):  # the parameter's own limits (user min/max may lie beyond)
        if key == "low" and scale == "log" and got[key] <= 0:
            continue  # the range itself says why
        problem = spec.limit_problem(float(got[key]))
        if problem:
            chk.add(f"{path}.{key}", problem)
    try:
        dist_ = Range(got["low"], got["high"], scale, integer, got.get("min"), got.get("max"))
    except RangeError as e:
        chk.add(f"{path}.{e.key}" if e.key else path, e.rule)
        return BAD
    return BAD if len(chk.problems) > before else dist_
