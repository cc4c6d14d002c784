"""Every hyperparameter of a trial: names, types, hard limits and defaults.

This table is the single source of truth. The coordinator validates sweep
configs against it (``SPEC``) and the trainer builds a frozen ``Hyper`` from a
trial's flat parameter mapping with ``Hyper.from_params``. Pure Python: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

RULE_NAMES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
SCHEDULE_KINDS = ("constant", "step", "plateau", "exponential", "inverse_time")
SCHEDULE_UNITS = ("epoch", "iteration")


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter: its type, hard limits and whether it can be searched.

    ``low``/``high`` are hard limits (``None`` = unbounded); ``low_open`` /
    ``high_open`` say whether the limit itself is excluded (``dropout`` may be 0
    but never 1). ``choices`` lists the allowed values of a categorical one.
    ``searchable`` is False for list-valued settings that can only be fixed.
    """

    name: str
    kind: type  # float, int, str or tuple
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    searchable: bool = True

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable for this parameter, or None if it is."""
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                return f"expected one of {', '.join(self.choices or ())}, got {value!r}"
            return None
        if self.kind is tuple:
            return None  # list-valued settings are checked by their own validators
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {value!r}"
        if self.kind is int and float(value) != int(value):
            return f"expected an integer, got {value!r}"
        if not math.isfinite(value):
            return f"expected a finite number, got {value!r}"
        return self.limit_problem(float(value))

    def limit_problem(self, value: float) -> str | None:
        """Why a finite number breaks the hard limits, or None."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return f"must be {'>' if self.low_open else '>='} {self.low:g}, got {value:g}"
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return f"must be {'<' if self.high_open else '<='} {self.high:g}, got {value:g}"
        return None


def _p(name: str, kind: type, default: Any, help: str, **kw: Any) -> ParamSpec:
    return ParamSpec(name=name, kind=kind, default=default, help=help, **kw)


SPEC: dict[str, ParamSpec] = {
    p.name: p
    for p in (
        _p("learning_rate", float, 1e-3, "base step size", low=0.0, low_open=True),
        _p("reg", float, 0.0, "L2 regularisation strength", low=0.0),
        _p("hidden_size", int, 100, "width of every hidden layer", low=1),
        _p("depth", int, 1, "number of hidden layers", low=0),
        _p("hidden", tuple, (), "explicit hidden widths, e.g. [200, 100]", searchable=False),
        _p("dropout", float, 0.0, "drop probability of hidden units", low=0.0, high=1.0,
           high_open=True),
        _p("batch_size", int, 64, "examples per minibatch", low=1),
        _p("update_rule", str, "sgd", "parameter update rule", choices=RULE_NAMES),
        _p("momentum", float, 0.9, "mu of momentum / nesterov", low=0.0, high=1.0,
           high_open=True),
        _p("beta1", float, 0.9, "adam first-moment decay", low=0.0, high=1.0, high_open=True),
        _p("beta2", float, 0.999, "adam second-moment decay", low=0.0, high=1.0,
           high_open=True),
        _p("eps", float, 1e-8, "adagrad / rmsprop / adam smoothing term", low=0.0,
           low_open=True),
        _p("decay_rate", float, 0.99, "rmsprop cache decay", low=0.0, high=1.0,
           high_open=True),
        _p("schedule", str, "constant", "learning-rate schedule", choices=SCHEDULE_KINDS),
        _p("schedule_unit", str, "epoch", "what t counts in the schedule",
           choices=SCHEDULE_UNITS),
        _p("schedule_every", int, 5, "step schedule: cut every this many epochs", low=1),
        _p("schedule_factor", float, 0.5, "step / plateau schedule: multiply lr by this",
           low=0.0, high=1.0, low_open=True),
        _p("schedule_patience", int, 3, "plateau: epochs without improvement before a cut",
           low=1),
        _p("schedule_k", float, 0.1, "exponential / inverse_time decay constant", low=0.0),
        _p("momentum_schedule", tuple, (), "mu per epoch, e.g. [0.5, 0.9, 0.95, 0.99]",
           searchable=False),
        _p("ema_decay", float, 0.0, "running average of the weights (0 = off)", low=0.0,
           high=1.0, high_open=True),
        _p("weight_scale", float, 0.0, "std of initial weights (0 = He initialisation)",
           low=0.0),
        _p("diverge_factor", float, 3.0, "stop when loss exceeds this x the initial loss",
           low=1.0, low_open=True),
    )
}

# Settings that only matter for some update rules or schedules: present but
# unused is fine (no error), so a sweep can search update_rule and momentum together.
APPLIES_TO_RULE = {
    "momentum": ("momentum", "nesterov"),
    "beta1": ("adam",),
    "beta2": ("adam",),
    "eps": ("adagrad", "rmsprop", "adam"),
    "decay_rate": ("rmsprop",),
}


@dataclass(frozen=True)
class Hyper:
    """The resolved hyperparameters of one trial (defaults filled in)."""

    learning_rate: float = 1e-3
    reg: float = 0.0
    hidden: tuple[int, ...] = (100,)
    dropout: float = 0.0
    batch_size: int = 64
    update_rule: str = "sgd"
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    decay_rate: float = 0.99
    schedule: str = "constant"
    schedule_unit: str = "epoch"
    schedule_every: int = 5
    schedule_factor: float = 0.5
    schedule_patience: int = 3
    schedule_k: float = 0.1
    momentum_schedule: tuple[float, ...] = field(default_factory=tuple)
    ema_decay: float = 0.0
    weight_scale: float = 0.0
    diverge_factor: float = 3.0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Hyper:
        """Build from a flat mapping of SPEC names; ``hidden_size``/``depth`` become ``hidden``.

        Raises ``ValueError`` naming every unknown or invalid parameter.
        """
        problems = [f"{k}: unknown hyperparameter" for k in params if k not in SPEC]
        problems += [
            f"{k}: {msg}" for k, v in params.items() if k in SPEC and (msg := SPEC[k].problem(v))
        ]
        if problems:
            raise ValueError("; ".join(problems))
        values = {k: v for k, v in params.items() if k not in ("hidden_size", "depth", "hidden")}
        hidden = params.get("hidden") or ()
        if not hidden:
            width = int(params.get("hidden_size", SPEC["hidden_size"].default))
            hidden = (width,) * int(params.get("depth", SPEC["depth"].default))
        values["hidden"] = tuple(int(h) for h in hidden)
        if "momentum_schedule" in values:
            values["momentum_schedule"] = tuple(float(m) for m in values["momentum_schedule"])
        for f in fields(cls):
            if f.name in values and SPEC.get(f.name) and SPEC[f.name].kind in (int, float):
                values[f.name] = SPEC[f.name].kind(values[f.name])
        return cls(**values)
