"""Sweep config: YAML -> validated, frozen ``SweepConfig``.

Validation happens once, at this boundary, against the hyperparameter table
``worker.nn.hyper.SPEC``; code past it trusts the result. Every problem in a file is
collected and raised as one ``ConfigError`` whose lines read ``file: key.path: rule,
got X``. This module holds the schema, the loading and the stage keys; the field
readers live in ``coordinator.checks`` and the searched distributions are read next
to their types in ``coordinator.space`` (a range's rules live in ``Range`` only).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import yaml

from coordinator.checks import (
    BAD,
    Problems,
    bounded,
    check_keys,
    count,
    number,
    one_of,
    positive_int,
    read_description,
    read_name,
    read_train,
    show,
    yaml_problem,
)
from coordinator.datasets.spec import read_dataset
from coordinator.modelcheck import read_model
from coordinator.space import Dist, read_space
from worker import defaults
from worker.data import PREPROCESS_MODES
from worker.nn.hyper import SPEC, Hyper
from worker.prune import PruneRule
from worker.prune import problems as prune_problems

SELECT_MODES = ("raw", "ema", "best")
INIT_MODES = ("shared", "per_trial")
# Refused unless --max-trials allows more: a typo (trials: 100000000) must not fill
# the database and Redis. A launch's memory does not grow with it; disk and Redis do.
MAX_TRIALS_PER_STAGE = 1_000_000


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

    Required: ``name``, ``dataset`` (``digits``, ``spiral``, an absolute path to a
    ``.npz``/``.csv`` file, ``cifar10:FOLDER``, ``mnist:FOLDER``, or a mapping of
    ``train``/``val``/``test`` to files: ``coordinator.datasets``), ``space``
    (searched parameters -> distribution) and ``stages``. Optional top-level keys and
    their defaults:

    - ``model`` ("mlp"): the registered model to train (``coordinator.modelcheck``);
      ``train`` and ``space`` take the trainer's settings and its constructor's.
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
    - ``val_fraction`` / ``test_fraction`` (0.14 each): the fixed split (of the training
      rows, for a dataset that brings its own validation or test rows).
    - ``preprocess`` ("standardize"): per-feature standardisation, ``mean_image``
      subtraction or ``none``, with statistics of the training rows only.
    - ``description`` (""): free text.
    """

    name: str
    dataset: str | Mapping[str, str]
    space: Mapping[str, Dist]
    stages: tuple[StageConfig, ...]
    seed: int = 0
    train: Mapping[str, Any] = field(default_factory=dict)
    max_attempts: int = 3
    select: str = defaults.SELECT
    keep_snapshots: int = defaults.KEEP_SNAPSHOTS
    checkpoints: Retention = field(default_factory=Retention)
    init: str = "shared"
    val_fraction: float = defaults.VAL_FRACTION
    test_fraction: float = defaults.TEST_FRACTION
    preprocess: str = defaults.PREPROCESS
    description: str = ""
    model: str = defaults.MODEL

    def __post_init__(self) -> None:
        object.__setattr__(self, "space", MappingProxyType(dict(self.space)))
        object.__setattr__(self, "train", MappingProxyType(dict(self.train)))
        object.__setattr__(self, "stages", tuple(self.stages))
        if isinstance(self.dataset, Mapping):
            object.__setattr__(self, "dataset", MappingProxyType(dict(self.dataset)))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; ``SweepConfig.from_dict`` (and the YAML loader) read it back."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["train"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.train.items()}
        d["space"] = {k: dist.to_dict() for k, dist in self.space.items()}
        d["stages"] = [dataclasses.asdict(s) for s in self.stages]
        d["checkpoints"] = dataclasses.asdict(self.checkpoints)
        if isinstance(self.dataset, Mapping):
            d["dataset"] = dict(self.dataset)
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
        raise ConfigError([f"{source}: {yaml_problem(e)}"]) from None
    return parse_config(data, source, path.resolve().parent, max_trials=max_trials)


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None, *,
                 check_files: bool = True, max_trials: int | None = None) -> SweepConfig:
    """Validate parsed YAML into a ``SweepConfig``; ``ConfigError`` lists every problem.

    A relative dataset path is tried against the current directory, then
    ``base_dir`` (the config file's folder); ``check_files=False`` skips that.
    """
    chk = Problems(source)
    if not isinstance(data, Mapping):
        got = "an empty file" if data is None else show(data)
        chk.add("", f"expected a mapping with keys {', '.join(_REQUIRED)}, got {got}")
        raise ConfigError(chk.problems)
    check_keys(chk, "", data, _TOP_KEYS, required=_REQUIRED)
    model, table = read_model(chk, data, installed=check_files)
    values: dict[str, Any] = {} if model is BAD else {"model": model}
    for key in (k for k in data if k in _TOP_READERS):  # problems in the file's order
        if key == "model":
            continue
        if key == "dataset":
            value = read_dataset(chk, data[key], base_dir, check_files)
        elif key in ("train", "space"):
            value = _TOP_READERS[key](chk, key, data[key], table)
        else:
            value = _TOP_READERS[key](chk, key, data[key])
        if value is not BAD:
            values[key] = value
    _cross_check(chk, values)
    _check_trial_limit(chk, values.get("stages", ()), max_trials)
    if chk.problems:
        raise ConfigError(chk.problems)
    return SweepConfig(**values)


# ---------------------------------------------------------------------------- stages


def _stages(chk: Problems, path: str, raw: Any) -> Any:
    if not isinstance(raw, list) or not raw:
        chk.add(path, f"expected a non-empty list of stages, got {show(raw)}")
        return BAD
    stages = [_stage(chk, f"{path}[{i}]", entry) for i, entry in enumerate(raw)]
    for i, (stage, nxt) in enumerate(itertools.pairwise(stages)):
        if stage is BAD or nxt is BAD:
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
    return BAD if BAD in stages else tuple(stages)


def _stage(chk: Problems, path: str, entry: Any) -> Any:
    if not isinstance(entry, Mapping):
        chk.add(path, f"expected a mapping like {{trials: 20, epochs: 5}}, got {show(entry)}")
        return BAD
    keys = tuple(f.name for f in dataclasses.fields(StageConfig))
    check_keys(chk, path, entry, keys, required=("trials", "epochs"))
    readers = {
        "trials": positive_int,
        "epochs": positive_int,
        "keep": _keep,
        "margin": lambda c, p, v: bounded(c, p, v, 0.0, 1.0, what="a fraction in [0, 1]"),
        "carry": count,
        "edge": lambda c, p, v: bounded(c, p, v, 0.0, 0.5, high_open=True,
                                        what="a fraction in [0, 0.5)"),
        "quorum": lambda c, p, v: bounded(c, p, v, 0.0, 1.0, low_open=True,
                                          what="a fraction in (0, 1]"),
        "prune": lambda c, p, v: _prune(c, p, v, entry.get("epochs")),
    }
    values = {k: readers[k](chk, f"{path}.{k}", entry[k]) for k in keys if k in entry}
    if BAD in values.values() or "trials" not in values or "epochs" not in values:
        return BAD
    return StageConfig(**values)


def _prune(chk: Problems, path: str, value: Any, epochs: Any) -> Any:
    if value is None:
        return None
    found = prune_problems(value, epochs if isinstance(epochs, int) else None, show=show)
    for key, rule in found:
        chk.add(f"{path}.{key}" if key else path, rule)
    return BAD if found else PruneRule.from_dict(value)


def _check_trial_limit(chk: Problems, stages: tuple[StageConfig, ...],
                       max_trials: int | None) -> None:
    for i, stage in enumerate(stages):
        if max_trials is not None and stage.trials > max_trials:
            chk.add(f"stages[{i}].trials", f"at most {max_trials} trials per stage, got "
                                           f"{stage.trials}; pass --max-trials N to allow more")


def _keep(chk: Problems, path: str, value: Any) -> Any:
    what = "a fraction in (0, 1) or a count >= 1"
    x = number(chk, path, value, what=what)
    if x is BAD:
        return BAD
    if 0 < x < 1:
        return float(x)
    if x >= 1 and float(x).is_integer():
        return int(x)
    chk.add(path, f"expected {what}, got {show(value)}")
    return BAD



def _retention(chk: Problems, path: str, raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        chk.add(path, f"expected a mapping like {{keep: top, top: 10}}, got {show(raw)}")
        return BAD
    before = len(chk.problems)
    check_keys(chk, path, raw, ("keep", "top"))
    keep = one_of(KEEP_MODES)(chk, f"{path}.keep", raw.get("keep", Retention.keep))
    top = positive_int(chk, f"{path}.top", raw.get("top", Retention.top))
    if len(chk.problems) > before:
        return BAD
    return Retention(keep=keep, top=top)


_TOP_READERS = {
    "name": read_name,
    "model": None,  # read first (train and space depend on it) by read_model
    "dataset": None,  # needs the base directory: read by read_dataset
    "seed": lambda c, p, v: bounded(c, p, v, 0, 2**63 - 1, integer=True,
                                    what="an integer >= 0"),
    "train": read_train,
    "space": read_space,
    "stages": _stages,
    "max_attempts": positive_int,
    "select": one_of(SELECT_MODES),
    "keep_snapshots": count,
    "checkpoints": _retention,
    "init": one_of(INIT_MODES),
    "val_fraction": lambda c, p, v: bounded(c, p, v, 0.0, 1.0, low_open=True, high_open=True,
                                            what="a fraction in (0, 1)"),
    "test_fraction": lambda c, p, v: bounded(c, p, v, 0.0, 1.0, high_open=True,
                                             what="a fraction in [0, 1)"),
    "preprocess": one_of(PREPROCESS_MODES),
    "description": read_description,
}
_TOP_KEYS = tuple(_TOP_READERS)
_REQUIRED = ("name", "dataset", "space", "stages")


def _cross_check(chk: Problems, values: dict[str, Any]) -> None:
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
            Hyper.from_params({k: v for k, v in {**train, **sample}.items() if k in SPEC})
        except (TypeError, ValueError) as e:  # a gap between these checks and the trainer's
            chk.add("train", f"rejected by the trainer: {e}")

