"""The notes' sanity checks before training a model ("Neural Networks Part 3"), for any
model of the protocol (``worker.nn.protocol``):

- gradient check: centred differences ``(f(x+h) - f(x-h)) / 2h`` in float64 on a tiny
  batch, the relative error ``|a - n| / max(|a|, |n|)`` per parameter array (its largest
  over the entries checked) against the notes' thresholds: above 1e-2 the gradient is
  probably wrong; 1e-4 to 1e-2 is uncomfortable; below 1e-4 fine for objectives with
  kinks (ReLU, max pooling); below 1e-7 excellent. Checked with reg 0 and with reg on;
  a model's randomness (dropout) replays the same draws for every evaluation;
- the initial loss (reg 0) against ``ln(num_classes)`` (diffuse scores at the start);
- the loss grows with the regularisation strength;
- overfitting 20 examples: the trainer's own loop must reach 100 % on them.

Pure NumPy; ``coordinator.gradcheck`` prints the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.nn.hyper import Hyper
from worker.nn.protocol import ModelSpec, accepts, hyper_parameters, loss_takes_rng
from worker.nn.training import TrainState

WRONG, UNCOMFORTABLE, KINKS, EXCELLENT = 1e-2, 1e-4, 1e-4, 1e-7
MAX_ENTRIES = 60  # entries checked per parameter array (a random sample beyond that)
STEP = 1e-5
INITIAL_LOSS_TOLERANCE = 0.05  # relative, with weights of std 1e-3 (scores ~0)


@dataclass(frozen=True)
class Check:
    name: str
    value: str
    passed: bool
    note: str


def verdict(rel: float) -> tuple[bool, str]:
    if not math.isfinite(rel) or rel > WRONG:
        return False, "wrong: above 1e-2"
    if rel > UNCOMFORTABLE:
        return True, "uncomfortable: 1e-4 to 1e-2 (kinks? check again)"
    if rel > EXCELLENT:
        return True, "ok: below 1e-4 (fine with kinks)"
    return True, "excellent: below 1e-7"


def _spec(cls: type, input_shape: tuple[int, ...], num_classes: int,
          hyper: Mapping[str, Any], **override: Any) -> ModelSpec:
    names = hyper_parameters(cls)
    return ModelSpec("check", cls, input_shape, num_classes,
                     {**hyper, **{k: v for k, v in override.items() if k in names}})


def gradient_checks(cls: type, input_shape: tuple[int, ...], num_classes: int,
                    hyper: Mapping[str, Any], seed: int = 0) -> list[Check]:
    """One row per parameter array, with reg 0 and (if the model takes ``reg``) reg on."""
    takes_reg = "reg" in hyper_parameters(cls)
    regs = [0.0, float(hyper.get("reg") or 0.1)] if takes_reg else [None]
    rows = []
    for reg in regs:
        extra = {} if reg is None else {"reg": reg}
        label = "" if reg is None else f" (reg {reg:g})"
        for name, rel in _relative_errors(_spec(cls, input_shape, num_classes, hyper, **extra),
                                          seed).items():
            ok, note = verdict(rel)
            rows.append(Check(f"gradient {name}{label}", f"{rel:.2e}", ok, note))
    return rows


def _relative_errors(spec: ModelSpec, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    build_rng = np.random.Generator(np.random.PCG64(seed))
    net = spec.build(build_rng, np.float64)
    X = rng.standard_normal((3, *spec.input_shape))
    y = rng.integers(0, spec.num_classes, 3)
    start = build_rng.bit_generator.state  # replayed before each call: same dropout masks

    def f() -> Any:
        build_rng.bit_generator.state = start
        if loss_takes_rng(net):
            return net.loss(X, y, rng=build_rng)
        return net.loss(X, y)

    _, grads = f()
    analytic = {k: np.array(g, dtype=np.float64) for k, g in grads.items()}
    out = {}
    for name, p in net.params.items():
        if name not in analytic:
            out[name] = math.inf
            continue
        flat, a = p.reshape(-1), analytic[name].reshape(-1)
        idx = np.arange(flat.size) if flat.size <= MAX_ENTRIES else \
            rng.choice(flat.size, MAX_ENTRIES, replace=False)
        worst = 0.0
        for i in idx:
            old = flat[i]
            flat[i] = old + STEP
            plus = float(f()[0])
            flat[i] = old - STEP
            minus = float(f()[0])
            flat[i] = old
            num = (plus - minus) / (2 * STEP)
            scale = max(abs(num), abs(float(a[i])))
            worst = max(worst, abs(num - float(a[i])) / scale if scale > 0 else 0.0)
        out[name] = worst
    return out


def initial_loss(cls: type, input_shape: tuple[int, ...], num_classes: int,
                 hyper: Mapping[str, Any], seed: int = 0) -> list[Check]:
    """The loss at initialisation (reg 0) near ln(C); with reg, larger."""
    rng = np.random.default_rng(seed + 1)
    X = rng.standard_normal((64, *input_shape)).astype(np.float32)
    y = rng.integers(0, num_classes, 64)

    small = "weight_scale" in hyper_parameters(cls)

    def loss_at(**override: Any) -> float:
        # the notes: "the loss you expect when you initialize with small parameters"
        spec = _spec(cls, input_shape, num_classes, hyper, weight_scale=1e-3, **override)
        net = spec.build(np.random.Generator(np.random.PCG64(seed)), np.float32)
        if not small:  # a model without weight_scale: shrink what it drew
            for p in net.params.values():
                p *= 1e-3
        kw = {"rng": np.random.default_rng(seed)} if loss_takes_rng(net) else {}
        return float(net.loss(X, y, **kw)[0])

    expected = math.log(num_classes)
    base = loss_at(reg=0.0, dropout=0.0)
    ok = math.isfinite(base) and abs(base / expected - 1) <= INITIAL_LOSS_TOLERANCE
    rows = [Check("initial loss (small weights, reg 0)",
                  f"{base:.3f} vs ln({num_classes}) = {expected:.3f}", ok,
                  "chance level" if ok else "not chance level: a bug in the loss?")]
    if "reg" in hyper_parameters(cls):
        more = loss_at(reg=1.0e3, dropout=0.0)
        rows.append(Check("loss grows with reg", f"{more:.3g} at reg 1e3", more > base,
                          "as expected" if more > base else "regularisation has no effect"))
    return rows


def overfit(cls: type, input_shape: tuple[int, ...], num_classes: int,
            hyper: Mapping[str, Any], seed: int = 0, epochs: int = 300,
            learning_rate: float = 1e-3, update_rule: str = "adam") -> list[Check]:
    """The trainer's loop on 20 examples (reg 0, no dropout): 100 % within ``epochs``."""
    rng = np.random.default_rng(seed + 2)
    X = rng.standard_normal((20, *input_shape)).astype(np.float32)
    y = np.arange(20) % num_classes
    spec = _spec(cls, input_shape, num_classes, hyper, reg=0.0, dropout=0.0)
    h = Hyper(learning_rate=learning_rate, batch_size=20, update_rule=update_rule,
              diverge_factor=1e9)
    state = TrainState.create(h, input_shape, num_classes, seed, spec)
    acc, used = 0.0, 0
    for used in range(1, epochs + 1):  # noqa: B007 - used after the loop
        acc = state.train_epoch(X, y, X, y).val_acc
        if acc == 1.0:
            break
    ok = acc == 1.0
    return [Check("overfit 20 examples", f"{acc:.0%} after {used} epochs "
                  f"({update_rule}, lr {learning_rate:g})", ok,
                  "memorised" if ok else "cannot fit 20 examples: a bug, or raise --lr")]


def all_checks(cls: type, input_shape: tuple[int, ...], num_classes: int,
               hyper: Mapping[str, Any], seed: int = 0) -> list[Check]:
    return [*gradient_checks(cls, input_shape, num_classes, hyper, seed),
            *initial_loss(cls, input_shape, num_classes, hyper, seed),
            *overfit(cls, input_shape, num_classes, hyper, seed)]


__all__ = ["Check", "accepts", "all_checks"]
