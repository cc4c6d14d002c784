"""Every hyperparameter of a trial: names, types, hard limits and defaults.

This table is the single source of truth, except for the update rules' settings
(``momentum``, ``beta1``, ``beta2``, ``eps``, ``decay_rate``): their defaults are
the rule functions' own (``worker.nn.optim``), read from their signatures. The
coordinator validates sweep configs against it (``SPEC``) and the trainer builds a
frozen ``Hyper`` from a trial's flat parameter mapping with ``Hyper.from_params``.
Pure Python: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from worker.nn import optim

RULE_NAMES = tuple(optim.RULES)
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


def _rule_defaults() -> dict[str, float]:
    """Every update-rule setting with its default, from the rules' signatures."""
    found: dict[str, float] = {}
    for rule in optim.RULES:
        for name, default in optim.defaults(rule).items():
            if found.setdefault(name, default) != default:
                raise AssertionError(f"update rules disagree on the default of {name}")
    return found


_RULE_DEFAULTS = _rule_defaults()


def _r(name: str, help: str, **kw: Any) -> ParamSpec:
    """An update rule's setting: a float >= 0 whose default is the rule's."""
    return _p(name, float, _RULE_DEFAULTS[name], help, low=0.0, **kw)


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
        _r("momentum", "momentum / nesterov: mu of the notes", high=1.0, high_open=True),
        _r("beta1", "adam first-moment decay", high=1.0, high_open=True),
        _r("beta2", "adam second-moment decay", high=1.0, high_open=True),
        _r("eps", "adagrad / rmsprop / adam smoothing term", low_open=True),
        _r("decay_rate", "rmsprop cache decay", high=1.0, high_open=True),
        _p("schedule", str, "constant", "learning-rate schedule", choices=SCHEDULE_KINDS),
        _p("schedule_unit", str, "epoch", "what t counts in the schedule",
           choices=SCHEDULE_UNITS),
        _p("schedule_every", int, 5, "step schedule: cut every this many epochs", low=1),
        _p("schedule_factor", float, 0.5, "step / plateau schedule: multiply lr by this",
           low=0.0, high=1.0, low_open=True),
        _p("schedule_patience", int, 3, "plateau: epochs without improvement before a cut",
           low=1),
        _p("schedule_k", float, 0.1, "exponential / inverse_time decay constant", low=0.0),
        _p("momentum_schedule", tuple, (), "momentum per epoch, e.g. [0.5, 0.9, 0.95, 0.99]",
           searchable=False),
        _p("ema_decay", float, 0.0, "running average of the weights (0 = off)", low=0.0,
           high=1.0, high_open=True),
        _p("weight_scale", float, 0.0, "std of initial weights (0 = He initialisation)",
           low=0.0),
        _p("diverge_factor", float, 3.0, "stop when loss exceeds this x the initial loss",
           low=1.0, low_open=True),
    )
}


def _default(name: str) -> Any:
    """``SPEC``'s default of ``name``: ``Hyper``'s fields keep no copies."""
    return SPEC[name].default


@dataclass(frozen=True)
class Hyper:
    """The resolved hyperparameters of one trial (defaults filled in, from ``SPEC``)."""

    learning_rate: float = _default("learning_rate")
    reg: float = _default("reg")
    hidden: tuple[int, ...] = (_default("hidden_size"),) * _default("depth")
    dropout: float = _default("dropout")
    batch_size: int = _default("batch_size")
    update_rule: str = _default("update_rule")
    momentum: float = _default("momentum")
    beta1: float = _default("beta1")
    beta2: float = _default("beta2")
    eps: float = _default("eps")
    decay_rate: float = _default("decay_rate")
    schedule: str = _default("schedule")
    schedule_unit: str = _default("schedule_unit")
    schedule_every: int = _default("schedule_every")
    schedule_factor: float = _default("schedule_factor")
    schedule_patience: int = _default("schedule_patience")
    schedule_k: float = _default("schedule_k")
    momentum_schedule: tuple[float, ...] = _default("momentum_schedule")
    ema_decay: float = _default("ema_decay")
    weight_scale: float = _default("weight_scale")
    diverge_factor: float = _default("diverge_factor")

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

    def optimizer(self) -> optim.Optimizer:
        """The trial's optimizer: ``update_rule`` with the settings that rule takes.

        Settings for other rules (``beta1`` for sgd, ...) are ignored. ``momentum``
        starts at ``self.momentum``; the trainer ramps it with ``set_hyper`` when a
        ``momentum_schedule`` is set.
        """
        taken = optim.defaults(self.update_rule)
        return optim.make(self.update_rule, **{k: getattr(self, k) for k in taken})
