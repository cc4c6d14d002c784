"""Config field readers: each records its problems and returns a value or ``BAD``.

Every reader has the signature ``read(chk, path, raw) -> value | BAD``: it never raises
for bad input, it records ``path: rule, got X`` in ``chk`` so that one ``ConfigError``
lists every problem of a file. ``coordinator.config`` assembles the readers into the
sweep schema; ``coordinator.space`` reads the searched distributions with them.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from worker.nn.hyper import SPEC, ParamSpec

# train.schedule as a mapping: sub-key -> the flat SPEC name it stands for
SCHEDULE_KEYS = {"kind": "schedule", "every": "schedule_every", "factor": "schedule_factor",
                 "patience": "schedule_patience", "k": "schedule_k", "unit": "schedule_unit"}
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
BAD = object()  # a value that failed validation (its problem is already recorded)
Reader = Callable[["Problems", str, Any], Any]

# ---------------------------------------------------------------------------- messages


class Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def add(self, path: str, rule: str) -> None:
        self.problems.append(f"{self.source}: {path}: {rule}" if path else f"{self.source}: {rule}")


def show(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list | tuple):
        return "an empty list" if not value else _clip(f"a list {list(value)!r}")
    return _clip(repr(value))


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def suggest(word: Any, options: Any) -> str:
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    what = getattr(e, "problem", None) or str(e)
    if mark is None:
        return f"invalid YAML: {what}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}"


def check_keys(chk: Problems, path: str, data: Mapping, allowed: tuple[str, ...],
               required: tuple[str, ...] = ()) -> None:
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in allowed:
            hint = suggest(key, allowed) or f"; expected one of {', '.join(allowed)}"
            chk.add(f"{prefix}{key}", f"unknown key {key!r}{hint}")
    for key in required:
        if key not in data:
            chk.add(f"{prefix}{key}", "missing required key")


# ---------------------------------------------------------------------------- numbers


def number(chk: Problems, path: str, value: Any, *, integer: bool = False,
           what: str = "a number") -> Any:
    """A finite int/float from a number or numeric string ("1e-3"), else record a problem."""
    x: float | None = None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 1e300:
        return value  # exact, even past 2**53 (a seed)
    if isinstance(value, int | float) and not isinstance(value, bool):
        x = float(value) if isinstance(value, float) else math.inf
    elif isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            x = None
    if x is None:
        chk.add(path, f"expected {what}, got {show(value)}")
        return BAD
    if not math.isfinite(x):
        chk.add(path, f"expected a finite number, got {show(value)}")
        return BAD
    if integer and not x.is_integer():
        chk.add(path, f"expected {what}, got {show(value)}")
        return BAD
    return int(x) if integer else (value if isinstance(value, int) else x)


def bounded(chk: Problems, path: str, value: Any, low: float, high: float | None = None, *,
            integer: bool = False, low_open: bool = False, high_open: bool = False,
            what: str = "a number") -> Any:
    x = number(chk, path, value, integer=integer, what=what)
    if x is BAD:
        return BAD
    too_low = x < low or (low_open and x == low)
    too_high = high is not None and (x > high or (high_open and x == high))
    if too_low or too_high:
        chk.add(path, f"expected {what}, got {show(value)}")
        return BAD
    return float(x) if not integer else x


def positive_int(chk: Problems, path: str, value: Any) -> Any:
    return bounded(chk, path, value, 1, integer=True, what="a positive integer")


def count(chk: Problems, path: str, value: Any) -> Any:
    return bounded(chk, path, value, 0, integer=True, what="an integer >= 0")


# ---------------------------------------------------------------------------- hyperparameters


def hyper_value(chk: Problems, path: str, spec: ParamSpec, value: Any) -> Any:
    """One value of a SPEC parameter, converted to its kind, or ``BAD``."""
    if spec.kind is tuple:
        return _hyper_list(chk, path, spec, value)
    if spec.kind is str and spec.choices is None:  # a model's free-form setting
        if isinstance(value, str):
            return value
        chk.add(path, f"expected a string, got {show(value)}")
        return BAD
    if spec.kind is str:
        options = tuple(sorted(spec.choices or ()))
        if isinstance(value, str) and value in options:
            return value
        hint = suggest(value, options) if isinstance(value, str) else ""
        chk.add(path, f"unknown {spec.name} {show(value)}; expected one of "
                      f"{', '.join(options)}{hint}")
        return BAD
    integer = spec.kind is int
    x = number(chk, path, value, integer=integer, what="an integer" if integer else "a number")
    if x is BAD:
        return BAD
    problem = spec.limit_problem(float(x))
    if problem:
        chk.add(path, problem)
        return BAD
    return int(x) if integer else float(x)


def _hyper_list(chk: Problems, path: str, spec: ParamSpec, value: Any) -> Any:
    if not isinstance(value, list) or not value:
        chk.add(path, f"expected a non-empty list, got {show(value)}")
        return BAD
    if spec.name in ("hidden", "momentum_schedule"):
        item = SPEC["hidden_size"] if spec.name == "hidden" else SPEC["momentum"]
    else:  # a model's list: numbers, integers when its default holds integers
        ints = bool(spec.default) and all(isinstance(d, int) for d in spec.default)
        item = ParamSpec(name=spec.name, kind=int if ints else float, default=0, help="")
    out = [hyper_value(chk, f"{path}[{i}]", item, v) for i, v in enumerate(value)]
    return BAD if BAD in out else tuple(out)


def _put(chk: Problems, out: dict, origin: dict, name: str, value: Any, path: str) -> None:
    if name in out:
        chk.add(path, f"given twice (also as {origin[name]})")
    elif value is not BAD:
        out[name], origin[name] = value, path


def read_train(chk: Problems, path: str, raw: Any,
               table: Mapping[str, ParamSpec] = SPEC) -> Any:
    """The fixed hyperparameters; ``table``: the names the sweep's model takes."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        chk.add(path, f"expected a mapping of fixed hyperparameters, got {show(raw)}")
        return BAD
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in raw.items():
        here = f"{path}.{key}"
        if key == "schedule" and isinstance(value, Mapping):
            check_keys(chk, here, value, tuple(SCHEDULE_KEYS))
            for sub, sub_value in value.items():
                if sub in SCHEDULE_KEYS:
                    name = SCHEDULE_KEYS[sub]
                    v = hyper_value(chk, f"{here}.{sub}", SPEC[name], sub_value)
                    _put(chk, out, origin, name, v, f"{here}.{sub}")
        elif key in table:
            _put(chk, out, origin, key, hyper_value(chk, here, table[key], value), here)
        else:
            chk.add(here, f"unknown hyperparameter {key!r}{suggest(key, table)}")
    return out



# ---------------------------------------------------------------------------- names and text


def read_name(chk: Problems, path: str, raw: Any) -> Any:
    if isinstance(raw, str) and NAME_PATTERN.fullmatch(raw):
        return raw
    chk.add(path, f"expected a name of letters, digits, '.', '_' or '-' (at most 100), "
                  f"got {show(raw)}")
    return BAD


def one_of(modes: tuple[str, ...]) -> Reader:
    """A reader accepting exactly one of ``modes``."""

    def read(chk: Problems, path: str, raw: Any) -> Any:
        if raw in modes:
            return raw
        chk.add(path, f"expected one of {', '.join(modes)}, got {show(raw)}"
                      f"{suggest(raw, modes)}")
        return BAD

    return read



def read_description(chk: Problems, path: str, raw: Any) -> Any:
    if raw is None or isinstance(raw, str):
        return raw or ""
    chk.add(path, f"expected text, got {show(raw)}")
    return BAD

