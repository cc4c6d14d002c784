"""Sweep config: YAML -> validated, frozen ``SweepConfig``.

Validation happens once, here, against the hyperparameter table
``worker.nn.hyper.SPEC``; code past this boundary trusts the result. Every
problem in a file is collected and raised as one ``ConfigError`` whose lines read
``file: key.path: rule, got X``.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import yaml

from coordinator.space import CHOICE, DIST_NAMES, Choice, Dist, Range
from worker.nn.hyper import SPEC, Hyper, ParamSpec
from worker.prune import PruneRule
from worker.prune import problems as prune_problems

DATASET_NAMES = ("digits", "spiral")
DATASET_SUFFIXES = (".npz", ".csv")
SELECT_MODES = ("raw", "ema", "best")
INIT_MODES = ("shared", "per_trial")
# train.schedule as a mapping: sub-key -> the flat SPEC name it stands for
SCHEDULE_KEYS = {"kind": "schedule", "every": "schedule_every", "factor": "schedule_factor",
                 "patience": "schedule_patience", "k": "schedule_k", "unit": "schedule_unit"}
# Refused unless --max-trials allows more: a typo (trials: 100000000) must not fill
# the database and Redis. A launch's memory does not grow with it; disk and Redis do.
MAX_TRIALS_PER_STAGE = 1_000_000
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_BAD = object()  # a value that failed validation (its problem is already recorded)


class ConfigError(ValueError):
    """Every problem found in one config; ``problems`` holds one message per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


@dataclass(frozen=True)
class StageConfig:
    """One stage: ``trials`` configurations trained for ``epochs`` each.

    The other keys say how this stage shapes the next one (unused on the last):

    - ``keep``: the top fraction (a float in (0, 1), rounded up) or count (an int
      >= 1) of this stage's ``done`` trials whose values span the next ranges.
    - ``margin``: padding on each side of the kept values, as a fraction of the
      current range's width in its scale (log10 space for log ranges).
    - ``carry``: how many of the next stage's ``trials`` are this stage's best
      configurations re-run (resumed from their checkpoints) at the next budget.
    - ``edge``: the edge zone, the outer fraction of a range (in its scale) where a
      best value raises a boundary flag and widens the next range past that edge.
    - ``quorum``: the next stage is planned as soon as this stage's first
      ``ceil(quorum * trials)`` trials (by index) have finished, from their ranking;
      the rest keep running beside the next stage, so no worker idles at a stage
      boundary. Deterministic for a seed: the quorum set is fixed by index, not by
      finishing order. 1 = a strict barrier.
    - ``prune`` (this stage itself, off by default): ``{rule: median|halving, after,
      min_trials, eta}`` stops a trial that is behind the stage's lower-index trials at
      the same epoch (``worker.prune``).
    """

    trials: int
    epochs: int
    # defaults chosen by benchmarks/search.py (20 seeds, digits and a harder set)
    keep: float | int = 0.15
    margin: float = 0.05
    carry: int = 2  # at most the stage's and the next stage's trials unless given
    edge: float = 0.1
    quorum: float = 0.8
    prune: PruneRule | None = None  # stop trials behind the stage's earlier ones (off)

    @property
    def quorum_trials(self) -> int:
        """How many leading trials must finish before the next stage is planned."""
        return max(1, min(self.trials, math.ceil(self.quorum * self.trials - 1e-9)))


KEEP_MODES = ("top", "all", "none")


@dataclass(frozen=True)
class Retention:
    """What a trial keeps once it can no longer train (``checkpoints:`` in the config).

    ``keep``: ``top`` (the ``top`` best trials of each stage keep their 'best' weights),
    ``all`` (every trial does) or ``none`` (no trial does). Kept weights lose their
    optimizer state; a trial that may still train (unfinished, or among the best of its
    sweep's last stage, which ``hpsweep extend`` may carry) keeps everything.
    """

    keep: str = "top"
    top: int = 10  # enough for `ensemble --method top-k` with k up to this


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep (DESIGN.md "Config").

    Required: ``name``, ``dataset`` (``digits``, ``spiral`` or an absolute path to a
    ``.npz``/``.csv`` file), ``space`` (searched parameters -> distribution) and
    ``stages``. Optional top-level keys and their defaults:

    - ``seed`` (0): seeds the data split and every sampled configuration.
    - ``train`` ({}): fixed hyperparameters by SPEC name, flattened
      (``schedule: {kind, every}`` becomes ``schedule``, ``schedule_every``).
    - ``max_attempts`` (3): attempts of a trial before it ends ``failed``.
    - ``select`` ("best"): a trial's score is its best validation accuracy of the
      ``raw`` weights, of their ``ema`` (needs ``ema_decay`` > 0), or the ``best`` of both.
    - ``keep_snapshots`` (0): extra per-epoch checkpoints kept for snapshot ensembles.
    - ``checkpoints`` ({keep: top, top: 10}): the retention policy (``Retention``).
    - ``init`` ("shared"): every trial of a stage starts from the same initial weights
      and minibatch order (common random numbers: differences between trials then come
      from their hyperparameters, not from luck); ``per_trial`` seeds each trial apart.
    - ``val_fraction`` / ``test_fraction`` (0.14 each): the fixed split.
    - ``description`` (""): free text.
    """

    name: str
    dataset: str
    space: Mapping[str, Dist]
    stages: tuple[StageConfig, ...]
    seed: int = 0
    train: Mapping[str, Any] = field(default_factory=dict)
    max_attempts: int = 3
    select: str = "best"
    keep_snapshots: int = 0
    checkpoints: Retention = field(default_factory=Retention)
    init: str = "shared"
    val_fraction: float = 0.14
    test_fraction: float = 0.14
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "space", MappingProxyType(dict(self.space)))
        object.__setattr__(self, "train", MappingProxyType(dict(self.train)))
        object.__setattr__(self, "stages", tuple(self.stages))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; ``SweepConfig.from_dict`` (and the YAML loader) read it back."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["train"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.train.items()}
        d["space"] = {k: dist.to_dict() for k, dist in self.space.items()}
        d["stages"] = [dataclasses.asdict(s) for s in self.stages]
        d["checkpoints"] = dataclasses.asdict(self.checkpoints)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepConfig:
        """Rebuild a stored config (re-validated; the dataset file is not re-checked)."""
        return parse_config(dict(d), source="<stored config>", base_dir=None, check_files=False)


def load_config(path: str | os.PathLike[str], *,
                max_trials: int | None = MAX_TRIALS_PER_STAGE) -> SweepConfig:
    """Read, parse and validate a YAML sweep file; ``ConfigError`` lists every problem.

    ``max_trials``: the most trials a stage may ask for (None: no limit).
    """
    path, source = Path(path), str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{source}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{source}: is a directory, expected a YAML file"]) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ConfigError([f"{source}: cannot read the file: {reason}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError([f"{source}: {_yaml_problem(e)}"]) from None
    return parse_config(data, source, path.resolve().parent, max_trials=max_trials)


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None, *,
                 check_files: bool = True, max_trials: int | None = None) -> SweepConfig:
    """Validate parsed YAML into a ``SweepConfig``; ``ConfigError`` lists every problem.

    A relative dataset path is tried against the current directory, then
    ``base_dir`` (the config file's folder); ``check_files=False`` skips that.
    """
    chk = _Problems(source)
    if not isinstance(data, Mapping):
        got = "an empty file" if data is None else _show(data)
        chk.add("", f"expected a mapping with keys {', '.join(_REQUIRED)}, got {got}")
        raise ConfigError(chk.problems)
    _check_keys(chk, "", data, _TOP_KEYS, required=_REQUIRED)
    values: dict[str, Any] = {}
    for key in (k for k in data if k in _TOP_READERS):  # problems in the file's order
        if key == "dataset":
            value = _dataset(chk, data[key], base_dir, check_files)
        else:
            value = _TOP_READERS[key](chk, key, data[key])
        if value is not _BAD:
            values[key] = value
    _cross_check(chk, values)
    _check_trial_limit(chk, values.get("stages", ()), max_trials)
    if chk.problems:
        raise ConfigError(chk.problems)
    return SweepConfig(**values)


# ---------------------------------------------------------------------------- messages


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def add(self, path: str, rule: str) -> None:
        self.problems.append(f"{self.source}: {path}: {rule}" if path else f"{self.source}: {rule}")


def _show(value: Any) -> str:
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


def _suggest(word: Any, options: Any) -> str:
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    what = getattr(e, "problem", None) or str(e)
    if mark is None:
        return f"invalid YAML: {what}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}"


def _check_keys(chk: _Problems, path: str, data: Mapping, allowed: tuple[str, ...],
                required: tuple[str, ...] = ()) -> None:
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in allowed:
            hint = _suggest(key, allowed) or f"; expected one of {', '.join(allowed)}"
            chk.add(f"{prefix}{key}", f"unknown key {key!r}{hint}")
    for key in required:
        if key not in data:
            chk.add(f"{prefix}{key}", "missing required key")


# ---------------------------------------------------------------------------- numbers


def _number(chk: _Problems, path: str, value: Any, *, integer: bool = False,
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
        chk.add(path, f"expected {what}, got {_show(value)}")
        return _BAD
    if not math.isfinite(x):
        chk.add(path, f"expected a finite number, got {_show(value)}")
        return _BAD
    if integer and not x.is_integer():
        chk.add(path, f"expected {what}, got {_show(value)}")
        return _BAD
    return int(x) if integer else (value if isinstance(value, int) else x)


def _bounded(chk: _Problems, path: str, value: Any, low: float, high: float | None = None, *,
             integer: bool = False, low_open: bool = False, high_open: bool = False,
             what: str = "a number") -> Any:
    x = _number(chk, path, value, integer=integer, what=what)
    if x is _BAD:
        return _BAD
    too_low = x < low or (low_open and x == low)
    too_high = high is not None and (x > high or (high_open and x == high))
    if too_low or too_high:
        chk.add(path, f"expected {what}, got {_show(value)}")
        return _BAD
    return float(x) if not integer else x


def _positive_int(chk: _Problems, path: str, value: Any) -> Any:
    return _bounded(chk, path, value, 1, integer=True, what="a positive integer")


def _count(chk: _Problems, path: str, value: Any) -> Any:
    return _bounded(chk, path, value, 0, integer=True, what="an integer >= 0")


# ---------------------------------------------------------------------------- hyperparameters


def _hyper_value(chk: _Problems, path: str, spec: ParamSpec, value: Any) -> Any:
    """One value of a SPEC parameter, converted to its kind, or ``_BAD``."""
    if spec.kind is tuple:
        return _hyper_list(chk, path, spec, value)
    if spec.kind is str:
        options = tuple(sorted(spec.choices or ()))
        if isinstance(value, str) and value in options:
            return value
        hint = _suggest(value, options) if isinstance(value, str) else ""
        chk.add(path, f"unknown {spec.name} {_show(value)}; expected one of "
                      f"{', '.join(options)}{hint}")
        return _BAD
    integer = spec.kind is int
    x = _number(chk, path, value, integer=integer, what="an integer" if integer else "a number")
    if x is _BAD:
        return _BAD
    problem = spec.limit_problem(float(x))
    if problem:
        chk.add(path, problem)
        return _BAD
    return int(x) if integer else float(x)


def _hyper_list(chk: _Problems, path: str, spec: ParamSpec, value: Any) -> Any:
    if not isinstance(value, list) or not value:
        chk.add(path, f"expected a non-empty list, got {_show(value)}")
        return _BAD
    item = SPEC["hidden_size"] if spec.name == "hidden" else SPEC["momentum"]
    out = [_hyper_value(chk, f"{path}[{i}]", item, v) for i, v in enumerate(value)]
    return _BAD if _BAD in out else tuple(out)


def _put(chk: _Problems, out: dict, origin: dict, name: str, value: Any, path: str) -> None:
    if name in out:
        chk.add(path, f"given twice (also as {origin[name]})")
    elif value is not _BAD:
        out[name], origin[name] = value, path


def _train(chk: _Problems, path: str, raw: Any) -> Any:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        chk.add(path, f"expected a mapping of fixed hyperparameters, got {_show(raw)}")
        return _BAD
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in raw.items():
        here = f"{path}.{key}"
        if key == "schedule" and isinstance(value, Mapping):
            _check_keys(chk, here, value, tuple(SCHEDULE_KEYS))
            for sub, sub_value in value.items():
                if sub in SCHEDULE_KEYS:
                    name = SCHEDULE_KEYS[sub]
                    v = _hyper_value(chk, f"{here}.{sub}", SPEC[name], sub_value)
                    _put(chk, out, origin, name, v, f"{here}.{sub}")
        elif key in SPEC:
            _put(chk, out, origin, key, _hyper_value(chk, here, SPEC[key], value), here)
        else:
            chk.add(here, f"unknown hyperparameter {key!r}{_suggest(key, SPEC)}")
    return out


# ---------------------------------------------------------------------------- space


def _space(chk: _Problems, path: str, raw: Any) -> Any:
    if not isinstance(raw, Mapping) or not raw:
        chk.add(path, f"expected a mapping of parameters to search, got {_show(raw)}")
        return _BAD
    out: dict[str, Dist] = {}
    for name, entry in raw.items():
        here = f"{path}.{name}"
        spec = SPEC.get(name)
        if spec is None:
            chk.add(here, f"unknown hyperparameter {name!r}{_suggest(name, SPEC)}")
        elif not spec.searchable:
            chk.add(here, f"cannot be searched ({spec.help}); fix it under train")
        elif not isinstance(entry, Mapping):
            chk.add(here, f"expected a mapping with 'dist', got {_show(entry)}")
        else:
            dist = _dist(chk, here, spec, entry)
            if dist is not _BAD:
                out[name] = dist
    return out


def _dist(chk: _Problems, path: str, spec: ParamSpec, entry: Mapping) -> Any:
    name = entry.get("dist")
    valid = ", ".join(sorted([*DIST_NAMES, CHOICE]))
    if name == CHOICE:
        return _choice(chk, path, spec, entry)
    if name in DIST_NAMES:
        return _range(chk, path, spec, entry, name)
    if "dist" not in entry:
        chk.add(f"{path}.dist", f"missing required key; expected one of {valid}")
    else:
        hint = _suggest(name, [*DIST_NAMES, CHOICE])
        chk.add(f"{path}.dist", f"unknown distribution {_show(name)}; expected one of "
                                f"{valid}{hint}")
    return _BAD


def _choice(chk: _Problems, path: str, spec: ParamSpec, entry: Mapping) -> Any:
    _check_keys(chk, path, entry, ("dist", "values"), required=("values",))
    raw = entry.get("values")
    if "values" in entry and (not isinstance(raw, list) or not raw):
        chk.add(f"{path}.values", f"expected a non-empty list, got {_show(raw)}")
    if not isinstance(raw, list) or not raw:
        return _BAD
    values: list[Any] = []
    for i, v in enumerate(raw):
        x = _hyper_value(chk, f"{path}.values[{i}]", spec, v)
        if x is not _BAD and x in values:
            chk.add(f"{path}.values[{i}]", f"duplicate value, got {_show(v)}")
            x = _BAD
        values.append(x)
    return _BAD if _BAD in values else Choice(tuple(values))


def _range(chk: _Problems, path: str, spec: ParamSpec, entry: Mapping, dist: str) -> Any:
    scale, integer = DIST_NAMES[dist]
    _check_keys(chk, path, entry, ("dist", "low", "high", "min", "max"),
                required=("low", "high"))
    if spec.kind is str:
        chk.add(f"{path}.dist", f"{spec.name} is categorical; use choice, got {dist}")
        return _BAD
    if spec.kind is int and not integer:
        chk.add(f"{path}.dist", f"{spec.name} takes integers; use int_uniform or "
                                f"int_log_uniform, got {dist}")
        return _BAD
    what = "an integer" if integer else "a number"
    got: dict[str, Any] = {}
    for key in ("low", "high", "min", "max"):
        if key in entry:
            got[key] = _number(chk, f"{path}.{key}", entry[key], integer=integer, what=what)
    if _BAD in got.values() or "low" not in got or "high" not in got:
        return _BAD
    ok = True
    if scale == "log" and got["low"] <= 0:
        chk.add(f"{path}.low", f"must be > 0 for {dist}, got {_show(entry['low'])}")
        ok = False
    for key in ("low", "high") if ok else ("high",):  # user min/max may lie beyond SPEC's
        problem = spec.limit_problem(float(got[key]))
        if problem:
            chk.add(f"{path}.{key}", problem)
            ok = False
    if got["low"] >= got["high"]:
        chk.add(path, f"low must be < high, got low {got['low']!r} >= high {got['high']!r}")
        ok = False
    if got.get("min") is not None and got["low"] < got["min"]:
        chk.add(f"{path}.low", f"must be >= min ({got['min']!r}), got {got['low']!r}")
        ok = False
    if got.get("max") is not None and got["high"] > got["max"]:
        chk.add(f"{path}.high", f"must be <= max ({got['max']!r}), got {got['high']!r}")
        ok = False
    if not ok:
        return _BAD
    return Range(got["low"], got["high"], scale, integer, got.get("min"), got.get("max"))


# ---------------------------------------------------------------------------- stages


def _stages(chk: _Problems, path: str, raw: Any) -> Any:
    if not isinstance(raw, list) or not raw:
        chk.add(path, f"expected a non-empty list of stages, got {_show(raw)}")
        return _BAD
    stages = [_stage(chk, f"{path}[{i}]", entry) for i, entry in enumerate(raw)]
    for i, (stage, nxt) in enumerate(itertools.pairwise(stages)):
        if stage is _BAD or nxt is _BAD:
            continue
        if "carry" not in raw[i]:  # the default never asks for more than the stages hold
            stages[i] = stage = dataclasses.replace(
                stage, carry=min(stage.carry, stage.trials, nxt.trials))
        if stage.carry > nxt.trials:
            chk.add(f"{path}[{i}].carry", f"must be <= {path}[{i + 1}].trials ({nxt.trials}), "
                                          f"got {stage.carry}")
        if stage.carry > stage.trials:
            chk.add(f"{path}[{i}].carry", f"must be <= {path}[{i}].trials ({stage.trials}), "
                                          f"got {stage.carry}")
    return _BAD if _BAD in stages else tuple(stages)


def _stage(chk: _Problems, path: str, entry: Any) -> Any:
    if not isinstance(entry, Mapping):
        chk.add(path, f"expected a mapping like {{trials: 20, epochs: 5}}, got {_show(entry)}")
        return _BAD
    keys = tuple(f.name for f in dataclasses.fields(StageConfig))
    _check_keys(chk, path, entry, keys, required=("trials", "epochs"))
    readers = {
        "trials": _positive_int,
        "epochs": _positive_int,
        "keep": _keep,
        "margin": lambda c, p, v: _bounded(c, p, v, 0.0, 1.0, what="a fraction in [0, 1]"),
        "carry": _count,
        "edge": lambda c, p, v: _bounded(c, p, v, 0.0, 0.5, high_open=True,
                                         what="a fraction in [0, 0.5)"),
        "quorum": lambda c, p, v: _bounded(c, p, v, 0.0, 1.0, low_open=True,
                                           what="a fraction in (0, 1]"),
        "prune": lambda c, p, v: _prune(c, p, v, entry.get("epochs")),
    }
    values = {k: readers[k](chk, f"{path}.{k}", entry[k]) for k in keys if k in entry}
    if _BAD in values.values() or "trials" not in values or "epochs" not in values:
        return _BAD
    return StageConfig(**values)


def _prune(chk: _Problems, path: str, value: Any, epochs: Any) -> Any:
    if value is None:
        return None
    found = prune_problems(value, epochs if isinstance(epochs, int) else None, show=_show)
    for key, rule in found:
        chk.add(f"{path}.{key}" if key else path, rule)
    return _BAD if found else PruneRule.from_dict(value)


def _check_trial_limit(chk: _Problems, stages: tuple[StageConfig, ...],
                       max_trials: int | None) -> None:
    for i, stage in enumerate(stages):
        if max_trials is not None and stage.trials > max_trials:
            chk.add(f"stages[{i}].trials", f"at most {max_trials} trials per stage, got "
                                           f"{stage.trials}; pass --max-trials N to allow more")


def _keep(chk: _Problems, path: str, value: Any) -> Any:
    what = "a fraction in (0, 1) or a count >= 1"
    x = _number(chk, path, value, what=what)
    if x is _BAD:
        return _BAD
    if 0 < x < 1:
        return float(x)
    if x >= 1 and float(x).is_integer():
        return int(x)
    chk.add(path, f"expected {what}, got {_show(value)}")
    return _BAD


# ---------------------------------------------------------------------------- the rest


def _dataset(chk: _Problems, raw: Any, base_dir: Path | None, check_files: bool) -> Any:
    expected = "expected digits, spiral, or a path to a .npz or .csv file"
    if not isinstance(raw, str) or not raw.strip():
        chk.add("dataset", f"{expected}, got {_show(raw)}")
        return _BAD
    if raw in DATASET_NAMES:
        return raw
    suffix = Path(raw).suffix.lower()
    if not suffix:
        chk.add("dataset", f"unknown dataset {raw!r}; {expected}{_suggest(raw, DATASET_NAMES)}")
        return _BAD
    if suffix not in DATASET_SUFFIXES:
        chk.add("dataset", f"unsupported file type {suffix!r}; {expected}, got {raw!r}")
        return _BAD
    if not check_files:
        return raw
    path = Path(raw).expanduser()
    tried = [path] if path.is_absolute() else [Path.cwd() / path]
    if base_dir is not None and not path.is_absolute():
        tried.append(Path(base_dir) / path)
    for candidate in tried:
        try:
            found = candidate.is_file()
        except (OSError, ValueError):  # a name with a NUL byte, or too long
            found = False
        if found:
            if not os.access(candidate, os.R_OK):
                chk.add("dataset", f"cannot read the file, got {str(candidate)!r}")
                return _BAD
            return str(candidate.resolve())
    where = ", ".join(str(p.parent.resolve()) for p in tried)
    chk.add("dataset", f"file not found (looked in {where}), got {raw!r}")
    return _BAD


def _name(chk: _Problems, path: str, raw: Any) -> Any:
    if isinstance(raw, str) and NAME_PATTERN.fullmatch(raw):
        return raw
    chk.add(path, f"expected a name of letters, digits, '.', '_' or '-' (at most 100), "
                  f"got {_show(raw)}")
    return _BAD


def _one_of(modes: tuple[str, ...]):  # type: ignore[no-untyped-def]
    def read(chk: _Problems, path: str, raw: Any) -> Any:
        if raw in modes:
            return raw
        chk.add(path, f"expected one of {', '.join(modes)}, got {_show(raw)}"
                      f"{_suggest(raw, modes)}")
        return _BAD

    return read


_select = _one_of(SELECT_MODES)


def _description(chk: _Problems, path: str, raw: Any) -> Any:
    if raw is None or isinstance(raw, str):
        return raw or ""
    chk.add(path, f"expected text, got {_show(raw)}")
    return _BAD


def _retention(chk: _Problems, path: str, raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        chk.add(path, f"expected a mapping like {{keep: top, top: 10}}, got {_show(raw)}")
        return _BAD
    before = len(chk.problems)
    _check_keys(chk, path, raw, ("keep", "top"))
    keep = _one_of(KEEP_MODES)(chk, f"{path}.keep", raw.get("keep", Retention.keep))
    top = _positive_int(chk, f"{path}.top", raw.get("top", Retention.top))
    if len(chk.problems) > before:
        return _BAD
    return Retention(keep=keep, top=top)


_TOP_READERS = {
    "name": _name,
    "dataset": None,  # needs the base directory: read by _dataset
    "seed": lambda c, p, v: _bounded(c, p, v, 0, 2**63 - 1, integer=True,
                                     what="an integer >= 0"),
    "train": _train,
    "space": _space,
    "stages": _stages,
    "max_attempts": _positive_int,
    "select": _select,
    "keep_snapshots": _count,
    "checkpoints": _retention,
    "init": _one_of(INIT_MODES),
    "val_fraction": lambda c, p, v: _bounded(c, p, v, 0.0, 1.0, low_open=True, high_open=True,
                                             what="a fraction in (0, 1)"),
    "test_fraction": lambda c, p, v: _bounded(c, p, v, 0.0, 1.0, high_open=True,
                                              what="a fraction in [0, 1)"),
    "description": _description,
}
_TOP_KEYS = tuple(_TOP_READERS)
_REQUIRED = ("name", "dataset", "space", "stages")


def _cross_check(chk: _Problems, values: dict[str, Any]) -> None:
    """Rules that span keys: train vs space, the split, select vs ema, a test build."""
    train, space = values.get("train", {}), values.get("space", {})
    for name in space:
        if name in train:
            chk.add(f"space.{name}", "also fixed in train; a parameter is either fixed (train) "
                                     "or searched (space), not both")
        if name in ("hidden_size", "depth") and "hidden" in train:
            chk.add(f"space.{name}", "has no effect: train.hidden fixes every hidden width; "
                                     "remove one of them")
    defaults = {f.name: f.default for f in dataclasses.fields(SweepConfig)}
    split = sum(values.get(k, defaults[k]) for k in ("val_fraction", "test_fraction"))
    if split >= 0.9:
        chk.add("test_fraction", f"val_fraction + test_fraction must be < 0.9 (leave data to "
                                 f"train on), got {split:g}")
    if train.get("schedule") == "step" and "schedule_every" not in train and \
            "schedule_every" not in space:
        chk.add("train.schedule.every", "required for kind step (cut the rate every this many "
                                        "epochs), got nothing")
    if values.get("select") == "ema" and not (train.get("ema_decay") or "ema_decay" in space):
        chk.add("select", "'ema' needs parameter averaging: set train.ema_decay > 0 "
                          "(e.g. 0.999) or search ema_decay, got no ema_decay")
    if not chk.problems:
        sample = {name: dist.sample(np.random.default_rng(0)) for name, dist in space.items()}
        try:
            Hyper.from_params({**train, **sample})
        except (TypeError, ValueError) as e:  # a gap between these checks and the trainer's
            chk.add("train", f"rejected by the trainer: {e}")

