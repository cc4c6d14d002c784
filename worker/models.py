"""Models by registered name: the entry-point group ``hpsweep.models``.

A model is an installed package that registers its class under this group (the
ecosystem's plug-in convention, e.g. in its pyproject.toml::

    [project.entry-points."hpsweep.models"]
    convnet = "hpsweep_convnet:ConvNet"

); hpsweep's own ``mlp`` is registered the same way. Configs and jobs name a model only by
this name: the only code ever imported is what an installed package registered, so no path
in a config, a job or a checkpoint reaches ``importlib``.

A worker may offer fewer models than are installed (``hpsweep worker --models``, or
``$HPSWEEP_MODELS``, a comma-separated list): a job for a model it does not offer goes back
to its queue for another worker.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from worker.defaults import MODEL
from worker.nn import protocol
from worker.nn.hyper import SPEC, ParamSpec
from worker.nn.mlp import MLP

# the trainer's own settings (update rule, schedule, averaging, ...): every model takes them
TRAINER_NAMES = tuple(n for n in SPEC if n not in protocol.hyper_parameters(MLP))

GROUP = "hpsweep.models"
DEFAULT_MODEL = MODEL
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ModelUnavailable(LookupError):
    """The model is not installed (or not offered, or failed to load) on this machine."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"model {name!r} {reason}")
        self.name = name


def registered() -> dict[str, EntryPoint]:
    """The installed models by name (a name registered twice with the same target once)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return dict(sorted(found.items()))


def suggestion(name: str, names: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest of ``names``, or empty."""
    close = difflib.get_close_matches(name, list(names), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def not_installed(name: str) -> ModelUnavailable:
    names = registered()
    known = ", ".join(names) or "none"
    return ModelUnavailable(name, f"is not installed (registered models: {known})"
                                  f"{suggestion(name, names)}")


def load(name: str) -> type:
    """The class registered as ``name``; ``ModelUnavailable`` when there is none or it does
    not import. Only registered entry points are ever loaded."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ModelUnavailable(str(name), "is not a model name")
    return _load(name)


@functools.cache
def _load(name: str) -> type:
    ep = registered().get(name)
    if ep is None:
        raise not_installed(name)
    try:
        cls = ep.load()
    except Exception as exc:
        raise ModelUnavailable(name, f"is registered ({ep.value}) but does not load: "
                                     f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(cls, type) or not callable(getattr(cls, "loss", None)):
        raise ModelUnavailable(name, f"is registered ({ep.value}) but is not a model class "
                                     "with a loss(X, y=None) method")
    return cls


def parse_offered(value: str | None) -> frozenset[str] | None:
    """The models a worker offers from ``--models``/``$HPSWEEP_MODELS`` (None: all)."""
    if value is None or not value.strip():
        return None
    return frozenset(n.strip() for n in value.split(",") if n.strip())


def check_offered(name: str, offered: frozenset[str] | None) -> type:
    """The class of ``name`` if this worker offers it, else ``ModelUnavailable``."""
    if offered is not None and name not in offered:
        raise ModelUnavailable(name, f"is not offered by this worker (it offers "
                                     f"{', '.join(sorted(offered))})")
    return load(name)


def model_name(config: Mapping[str, Any]) -> str:
    """The model a sweep config names (``mlp`` when it names none)."""
    return str(config.get("model") or DEFAULT_MODEL)


def spec_for(name: str, cls: type, input_shape: tuple[int, ...], num_classes: int,
             params: Mapping[str, Any]) -> protocol.ModelSpec:
    """The model of a trial: its constructor hyperparameters picked from the trial's."""
    return protocol.ModelSpec(name, cls, tuple(input_shape), int(num_classes),
                              protocol.coerce(cls, params))


def hyper_table(cls: type) -> dict[str, ParamSpec]:
    """Every hyperparameter a sweep of model ``cls`` may fix or search: the trainer's and
    the constructor's. A constructor parameter named like one of SPEC's (``reg``,
    ``dropout``) has SPEC's type and limits; any other is typed by its default (an int, a
    float (also without a default), a string, or a list that can only be fixed)."""
    table = {n: SPEC[n] for n in TRAINER_NAMES}
    for name, p in protocol.hyper_parameters(cls).items():
        table[name] = SPEC.get(name) or _spec_of(name, p.default)
    return table


def _spec_of(name: str, default: Any) -> ParamSpec:
    help = f"model hyperparameter (default {default!r})"
    if isinstance(default, str):
        return ParamSpec(name=name, kind=str, default=default, help=help)
    if isinstance(default, list | tuple):
        return ParamSpec(name=name, kind=tuple, default=tuple(default), help=help,
                         searchable=False)
    if isinstance(default, int) and not isinstance(default, bool):
        return ParamSpec(name=name, kind=int, default=default, help=help)
    return ParamSpec(name=name, kind=float, default=default, help=help)
