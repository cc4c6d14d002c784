"""Parameter update rules (CS231n notes) and the one optimizer that runs them.

Each rule is a small function ``rule(x, dx, state, lr, <hyper>=<default>)`` that
updates ``x`` in place. ``state`` is the parameter's own dict: its slot arrays
(``v``, ``cache``, ``m``; a rule creates them as zeros if absent), plus ``t``
(the optimizer's global step count, 1 on the first step) and ``scratch`` (a flat
buffer for temporaries, never saved; ``_scratch`` views it in ``x``'s shape).

Rules work in place on the parameter's dtype (float32): every scalar is a Python
float, which NumPy treats as weak, so nothing is upcast to float64, and
temporaries go into ``scratch`` through ``out=`` instead of being allocated.
``Optimizer`` runs a rule over each parameter, on large ones in cache-sized runs
(``layers.cache_runs``) that all share one run-sized scratch buffer, so a run's
temporaries never leave the cache.

A rule's keyword arguments are the trial's hyperparameters of the same names
(``momentum``, ``beta1``, ...) and their defaults are the only ones hpsweep has:
``worker.nn.hyper`` reads them from here.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from worker.nn import layers

# Per-parameter entries that are not checkpoint state: "t" is saved once for
# the whole optimizer, "scratch" is only a reusable buffer.
_UNSAVED = ("t", "scratch")
_HYPER_PREFIX = "hyper."
# Hyperparameters saved under an older name: checkpoints written before ``mu`` was
# renamed ``momentum`` (the config key) still resume.
_RENAMED = {"mu": "momentum"}


def _slot(state: dict[str, Any], name: str, x: np.ndarray) -> np.ndarray:
    """The state array ``name``, created as zeros like ``x`` on first use."""
    a = state.get(name)
    if a is None:
        a = state[name] = np.zeros_like(x)
    return a


def _scratch(state: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """A buffer shaped like ``x`` for temporaries: a view of ``state["scratch"]``.

    ``Optimizer`` keeps one run-sized buffer per parameter; an ``x`` bigger than
    the buffer (a non-contiguous parameter taken whole) gets a fresh one.
    """
    a = state.get("scratch")
    if a is None or a.size < x.size:
        return np.empty_like(x)
    return a[: x.size].reshape(x.shape)


def sgd(x: np.ndarray, dx: np.ndarray, state: dict[str, Any], lr: float) -> None:
    """Vanilla SGD: ``x -= lr * dx`` (in place)."""
    tmp = _scratch(state, x)
    np.multiply(dx, lr, out=tmp)
    x -= tmp


def momentum(
    x: np.ndarray, dx: np.ndarray, state: dict[str, Any], lr: float, momentum: float = 0.9
) -> None:
    """Momentum: ``v = mu * v - lr * dx; x += v`` (in place), ``mu`` = ``momentum``."""
    v = _slot(state, "v", x)
    tmp = _scratch(state, x)
    v *= momentum
    np.multiply(dx, lr, out=tmp)
    v -= tmp
    x += v


def nesterov(
    x: np.ndarray, dx: np.ndarray, state: dict[str, Any], lr: float, momentum: float = 0.9
) -> None:
    """Nesterov momentum: ``v_prev = v; v = mu*v - lr*dx; x += -mu*v_prev + (1+mu)*v``,
    ``mu`` = ``momentum``.

    Evaluated as ``x += mu*v - lr*dx`` with the new ``v``: the same value, since
    ``mu*v_prev = v + lr*dx``, in six passes instead of seven.
    """
    v = _slot(state, "v", x)
    tmp = _scratch(state, x)
    np.multiply(dx, lr, out=tmp)
    v *= momentum
    v -= tmp
    x -= tmp
    np.multiply(v, momentum, out=tmp)
    x += tmp


def _normalized_step(
    x: np.ndarray, num: np.ndarray, cache: np.ndarray, tmp: np.ndarray, lr: float, eps: float
) -> None:
    """``x -= lr * num / (sqrt(cache) + eps)``, through ``tmp``."""
    np.sqrt(cache, out=tmp)
    tmp += eps
    np.divide(num, tmp, out=tmp)
    tmp *= lr
    x -= tmp


def adagrad(
    x: np.ndarray, dx: np.ndarray, state: dict[str, Any], lr: float, eps: float = 1e-8
) -> None:
    """Adagrad: ``cache += dx**2; x -= lr * dx / (sqrt(cache) + eps)`` (in place)."""
    cache = _slot(state, "cache", x)
    tmp = _scratch(state, x)
    np.multiply(dx, dx, out=tmp)
    cache += tmp
    _normalized_step(x, dx, cache, tmp, lr, eps)


def rmsprop(
    x: np.ndarray,
    dx: np.ndarray,
    state: dict[str, Any],
    lr: float,
    decay_rate: float = 0.99,
    eps: float = 1e-8,
) -> None:
    """RMSprop: divide the step by a leaky RMS of past gradients (in place).

    ``cache = decay_rate * cache + (1 - decay_rate) * dx**2;
    x -= lr * dx / (sqrt(cache) + eps)``
    """
    cache = _slot(state, "cache", x)
    tmp = _scratch(state, x)
    cache *= decay_rate
    np.multiply(dx, dx, out=tmp)
    tmp *= 1 - decay_rate
    cache += tmp
    _normalized_step(x, dx, cache, tmp, lr, eps)


def adam(
    x: np.ndarray,
    dx: np.ndarray,
    state: dict[str, Any],
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> None:
    """Adam with bias correction (in place), ``t`` = global step count from 1.

    ``m = b1*m + (1-b1)*dx; v = b2*v + (1-b2)*dx**2;
    x -= lr * (m / (1-b1**t)) / (sqrt(v / (1-b2**t)) + eps)``

    Both corrections are folded into scalars (Kingma & Ba, section 2): with
    ``c = sqrt(1-b2**t)``, ``sqrt(v/c**2) + eps = (sqrt(v) + eps*c) / c``, so the
    step is ``lr * c/(1-b1**t) * m / (sqrt(v) + eps*c)``, the same value.
    """
    m = _slot(state, "m", x)
    v = _slot(state, "v", x)
    tmp = _scratch(state, x)
    t = state["t"]
    m *= beta1
    np.multiply(dx, 1 - beta1, out=tmp)
    m += tmp
    v *= beta2
    np.multiply(dx, dx, out=tmp)
    tmp *= 1 - beta2
    v += tmp
    c = math.sqrt(1 - beta2**t)
    _normalized_step(x, m, v, tmp, lr * c / (1 - beta1**t), eps * c)


Rule = Callable[..., None]
RULES: dict[str, Rule] = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adam": adam,
}


def defaults(name: str) -> dict[str, float]:
    """The hyperparameters of rule ``name`` with their defaults, from its signature."""
    params = list(inspect.signature(_rule(name)).parameters.values())[4:]  # after x, dx, state, lr
    return {p.name: p.default for p in params}


def slot_names(name: str) -> tuple[str, ...]:
    """The state slots rule ``name`` keeps, found by running it once on empty arrays."""
    probe: dict[str, Any] = {"t": 1}
    empty = np.empty(0, dtype=np.float32)
    _rule(name)(empty, empty, probe, 0.0, **defaults(name))
    return tuple(k for k in probe if k not in _UNSAVED)


def _rule(name: str) -> Rule:
    if name not in RULES:
        valid = ", ".join(sorted(RULES))
        raise ValueError(f"unknown update rule {name!r}; expected one of {valid}")
    return RULES[name]


# A rule on a large parameter runs over cache-sized runs of its arrays (x, dx,
# slots, scratch: ``layers.RUN`` elements each), so its several passes hit L2
# (adam on a 3072x500 W: 4.4 ms whole, 2.7 ms in runs). The scratch buffer is
# run-sized and reused by every run, so it is always in cache too (sgd on that W:
# 0.68 ms with a full-size scratch, 0.48 ms with a run-sized one).
def _parts(
    x: np.ndarray, dx: np.ndarray, state: dict[str, Any]
) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """The rule's arguments: whole, or as views over cache-sized runs of the arrays.

    Every run shares the parameter's run-sized ``scratch``. Elementwise float
    operations round the same in any run, so both give bit-identical results.
    """
    if x.size <= layers.RUN:
        yield x, dx, state
        return
    slots = {k: a for k, a in state.items() if k not in _UNSAVED}
    arrays = (x, dx, *slots.values())
    # reshape(-1) of a non-contiguous array copies, and the update would be lost
    if not all(a.flags.c_contiguous for a in arrays):
        yield x, dx, state
        return
    for x_run, dx_run, *slot_runs in layers.cache_runs(*arrays):
        part = dict(zip(slots, slot_runs, strict=True))
        part["t"], part["scratch"] = state["t"], state["scratch"]
        yield x_run, dx_run, part


def _run_buffer(x: np.ndarray) -> np.ndarray:
    """The scratch buffer of parameter ``x``: one run's worth of its dtype."""
    return np.empty(min(x.size, layers.RUN), x.dtype)


class Optimizer:
    """Runs one update rule over a dict of parameters, keeping each one's state.

    ``hyper`` holds the rule's current hyperparameters (read it to see whether
    the rule takes, e.g., ``momentum``); change them with ``set_hyper``. ``slots``
    names the arrays the rule keeps per parameter.
    """

    def __init__(self, name: str, **hyper: float) -> None:
        self.name = name
        self.rule = _rule(name)
        self.slots = slot_names(name)
        self.hyper: dict[str, float] = defaults(name)
        self.set_hyper(**hyper)
        self.t = 0
        self._states: dict[str, dict[str, Any]] = {}

    def set_hyper(self, **hyper: float) -> None:
        """Change hyperparameters from the next step on; unknown names raise ValueError."""
        for key in hyper:
            if key not in self.hyper:
                takes = ", ".join(self.hyper) or "none"
                raise ValueError(f"{self.name} takes no hyperparameter {key!r} (it takes: {takes})")
        # Python floats, so float32 arrays are never upcast by an np.float64
        self.hyper.update({k: float(v) for k, v in hyper.items()})

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        """Update every array of ``params`` in place from ``grads`` (same keys)."""
        self.t += 1
        lr = float(lr)
        for key, x in params.items():
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = self._new_state(key, x)
            state["t"] = self.t
            for part in _parts(x, grads[key], state):
                self.rule(*part, lr, **self.hyper)

    def _new_state(self, key: str, x: np.ndarray) -> dict[str, Any]:
        """Zeroed slots shaped and typed like ``x``, and its run-sized scratch buffer."""
        if key == "t" or f"{key}.".startswith(_HYPER_PREFIX):
            raise ValueError(f"parameter name {key!r} clashes with state-dict keys")
        state: dict[str, Any] = {slot: np.zeros_like(x) for slot in self.slots}
        state["scratch"] = _run_buffer(x)
        return state

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat copies of the state: ``"W1.v"``, ``"W1.cache"``, ``"t"``,
        ``"hyper.momentum"`` ...

        Plain numeric arrays, so the dict goes into ``np.savez`` and loads back with
        ``allow_pickle=False``. Hyperparameters are included so a ramped
        ``momentum`` resumes exactly.
        """
        out = {"t": np.array(self.t, dtype=np.int64)}
        out.update(
            {_HYPER_PREFIX + k: np.array(v, dtype=np.float64) for k, v in self.hyper.items()}
        )
        for key, state in self._states.items():
            out.update({f"{key}.{slot}": state[slot].copy() for slot in self.slots})
        return out

    def load_state_dict(self, d: Mapping[str, np.ndarray]) -> None:
        """Restore a ``state_dict()`` (or the ``np.load`` of one) exactly.

        Raises ValueError for a slot or hyperparameter this rule does not keep,
        or a parameter missing some of its slots.
        """
        hyper: dict[str, float] = {}
        states: dict[str, dict[str, Any]] = {}
        for name in d:
            if name == "t":
                continue
            if name.startswith(_HYPER_PREFIX):
                key = name.removeprefix(_HYPER_PREFIX)
                hyper[_RENAMED.get(key, key)] = float(d[name])
                continue
            key, _, slot = name.rpartition(".")
            if slot not in self.slots:
                raise ValueError(f"{self.name} keeps no state slot {slot!r} (found {name!r})")
            states.setdefault(key, {})[slot] = np.array(d[name])  # a copy we own
        for key, state in states.items():
            missing = [f"{key}.{slot}" for slot in self.slots if slot not in state]
            if missing:
                raise ValueError(f"{self.name} state is missing {', '.join(missing)}")
            state["scratch"] = _run_buffer(state[self.slots[0]])
        self.set_hyper(**hyper)
        self.t = int(d["t"])
        self._states = states


def make(name: str, **hyper: float) -> Optimizer:
    """An optimizer running rule ``name``; omitted hyperparameters take the rule's defaults.

    Raises ValueError for an unknown rule or a hyperparameter the rule does not take.
    """
    return Optimizer(name, **hyper)

