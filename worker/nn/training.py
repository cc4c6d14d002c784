"""One trial's training state: weights, optimizer, averages, RNG, and exact resume.

``TrainState`` runs one epoch at a time and serialises everything the next
epoch depends on, so ``from_checkpoint(...).train_epoch(...)`` is bit-identical
to an uninterrupted run: the generator's full state, optimizer slots, running
averages, step count and validation history all travel in the checkpoint.
All randomness (initial weights, epoch permutations, dropout masks) comes from
one ``np.random.Generator(np.random.PCG64(seed))`` owned by the state.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.nn import checkpoint, layers, model, optim, protocol, schedules
from worker.nn.checkpoint import CheckpointError
from worker.nn.hyper import Hyper
from worker.nn.mlp import MLP
from worker.nn.protocol import ModelSpec
from worker.nn.saved import fill, saved_spec, weights, with_prefix

FORMAT_VERSION = 1
DTYPE = np.float32
# Rows gathered at once: up to this many bytes of minibatches (at least one). Small
# data sets gather a whole epoch in one ``take`` and then step through views of it;
# big ones still gather one minibatch at a time (an epoch never copies the data).
GATHER_BYTES = 1 << 19
TRAIN_ACC_ROWS = 1000  # training accuracy of a model that does not count its own


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one finished (or diverged) epoch.

    ``train_acc`` is the accuracy on the training minibatches as they were
    trained on (dropout on, weights changing during the epoch), at no extra cost.
    """

    epoch: int  # 1-based number of the epoch just finished
    train_loss: float  # mean minibatch loss (data + reg) over the epoch
    train_acc: float  # accuracy on the training minibatches seen, before each step
    val_loss: float  # data loss on the validation split, raw weights
    val_acc: float
    lr: float  # the rate used for the epoch's last step
    ema_val_loss: float | None  # same metrics for the running-average weights
    ema_val_acc: float | None  # (None when ema_decay == 0)
    diverged: bool  # loss NaN/inf or > diverge_factor * initial loss: the epoch stopped


class TrainState:
    """Everything a trial needs between epochs; build with ``create`` or ``from_checkpoint``.

    ``model`` is any model of the protocol (``worker.nn.protocol``); its ``params`` are
    views of one flat float32 arena (the running average has one too), so a slot-free
    update rule (sgd) and the average update the whole model per call.
    """

    def __init__(
        self,
        hyper: Hyper,
        spec: ModelSpec,
        net: Any,
        opt: optim.Optimizer,
        rng: np.random.Generator,
        ema_params: dict[str, np.ndarray] | None = None,
        epoch: int = 0,
        iteration: int = 0,
        initial_loss: float | None = None,
        val_history: list[float] | None = None,
    ) -> None:
        self.hyper, self.spec, self.model = hyper, spec, net
        self._flat, self.params = _in_arena(net.params)
        net.params.update(self.params)  # the model now computes with the arena's views
        self.opt = opt
        self.rng = rng
        self._flat_ema, self.ema_params = (None, None) if ema_params is None else \
            _in_arena(ema_params)
        self.epoch = epoch  # epochs completed
        self.iteration = iteration  # optimizer steps taken
        self.initial_loss = initial_loss  # loss of the very first minibatch
        self.val_history = [] if val_history is None else val_history
        self._loss_rng = protocol.loss_takes_rng(net)
        self._counts = hasattr(net, "n_correct")
        # gradients: the model's own arena when it has one laid out like params (checked on
        # the first step), else one the trainer copies each step's gradients into
        flat_grads = getattr(net, "flat_grads", None)
        self._direct: bool | None = None if _fits(flat_grads, self._flat) else False
        if self._direct is False:
            self._flat_grads, self._grads = model.arena(protocol.shapes_of(self.params), DTYPE)
        else:
            self._flat_grads, self._grads = flat_grads, model.arena_views(flat_grads,
                                                                          self.params)
        # what the optimizer steps: the whole arena when the rule keeps no per-parameter
        # slots (its checkpoint state is then the same), else parameter by parameter
        self._stepped = ({"params": self._flat}, {"params": self._flat_grads}) \
            if not opt.slots else (self.params, self._grads)

    @property
    def net(self) -> Any:  # the model (the name it had when the MLP was the only one)
        return self.model

    @classmethod
    def create(cls, hyper: Hyper, input_shape: int | tuple[int, ...], n_classes: int,
               seed: int, spec: ModelSpec | None = None) -> TrainState:
        """A fresh state: weights drawn from the trial's generator, EMA = the weights.

        ``spec`` None: the built-in MLP with ``hyper``'s hidden widths, dropout and reg.
        """
        spec = spec or mlp_spec(hyper, protocol.input_shape_of(input_shape), n_classes)
        rng = np.random.Generator(np.random.PCG64(seed))
        net = spec.build(rng, DTYPE)
        ema = {k: p.copy() for k, p in net.params.items()} if hyper.ema_decay > 0 else None
        return cls(hyper, spec, net, hyper.optimizer(), rng, ema_params=ema)

    @classmethod
    def from_checkpoint(cls, hyper: Hyper, data: bytes,
                        spec: ModelSpec | None = None) -> TrainState:
        """The state saved by ``to_checkpoint``; raises ``CheckpointError`` if it
        is corrupt or does not fit ``hyper`` and ``spec`` (model, shapes, update rule, EMA).
        ``spec`` None: the built-in MLP, as ``create``."""
        arrays = checkpoint.decode(data)
        try:
            return cls._from_arrays(hyper, arrays, spec)
        except CheckpointError:
            raise
        except (KeyError, ValueError, TypeError) as e:  # missing or malformed entries
            raise CheckpointError(f"checkpoint does not fit this trial: {e!r}") from e

    @classmethod
    def _from_arrays(cls, hyper: Hyper, arrays: dict[str, np.ndarray],
                     spec: ModelSpec | None) -> TrainState:
        if int(arrays["format"]) != FORMAT_VERSION:
            raise CheckpointError(f"checkpoint format {int(arrays['format'])} is not supported")
        saved_as = saved_spec(arrays)
        spec = spec or mlp_spec(hyper, saved_as["input_shape"], saved_as["num_classes"])
        if saved_as["name"] != spec.name or str(arrays["update_rule"]) != hyper.update_rule:
            raise CheckpointError(
                f"checkpoint is for model {saved_as['name']} rule={arrays['update_rule']}, "
                f"not model {spec.name} rule={hyper.update_rule}")
        params = weights(arrays, "param.")
        ema = weights(arrays, "ema.") or None
        if (ema is None) != (hyper.ema_decay == 0):
            raise CheckpointError("checkpoint and trial disagree on ema_decay being on")
        # build with a generator that is then set to the saved state: a model that keeps
        # the generator it was built with draws from the resumed stream, like the trainer
        rng = np.random.Generator(np.random.PCG64())
        net = spec.build(rng, DTYPE)
        fill(net.params, params, "checkpoint weights")
        if ema is not None:
            protocol.check_like(ema, net.params, "checkpoint averages")
        rng.bit_generator.state = json.loads(arrays["rng"].tobytes().decode("utf-8"))
        opt = hyper.optimizer()
        opt.load_state_dict(with_prefix(arrays, "optim."))
        return cls(
            hyper,
            spec,
            net,
            opt,
            rng,
            ema_params=ema,
            epoch=int(arrays["epoch"]),
            iteration=int(arrays["iteration"]),
            initial_loss=float(arrays["initial_loss"]) if "initial_loss" in arrays else None,
            val_history=[float(v) for v in arrays["val_history"]],
        )

    def to_checkpoint(self) -> bytes:
        """Checkpoint bytes of the whole state (see ``from_checkpoint``)."""
        arrays: dict[str, np.ndarray] = {
            "format": np.array(FORMAT_VERSION, dtype=np.int64),
            "update_rule": np.array(self.hyper.update_rule),
            "model": np.array(self.spec.to_json()),
            "epoch": np.array(self.epoch, dtype=np.int64),
            "iteration": np.array(self.iteration, dtype=np.int64),
            "val_history": np.array(self.val_history, dtype=np.float64),
            # PCG64's 128-bit state and increment overflow int64: keep them as JSON text
            "rng": np.frombuffer(json.dumps(self.rng.bit_generator.state).encode(), np.uint8),
        }
        if self.initial_loss is not None:
            arrays["initial_loss"] = np.array(self.initial_loss, dtype=np.float64)
        arrays.update({f"param.{k}": p for k, p in self.params.items()})
        if self.ema_params is not None:
            arrays.update({f"ema.{k}": p for k, p in self.ema_params.items()})
        arrays.update({f"optim.{k}": a for k, a in self.opt.state_dict().items()})
        return checkpoint.encode(arrays)

    def train_epoch(
        self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray
    ) -> EpochResult:
        """Train one epoch over X (N, ...) float32, y (N,), then evaluate on the val split.

        A diverged epoch stops at the offending minibatch (its update is not
        applied) and reports NaN validation metrics; the state is then spent.
        """
        train_loss, train_acc, lr, diverged = self._run_minibatches(X, y)
        self.epoch += 1
        if diverged:
            nan = float("nan")
            ema_nan = None if self.ema_params is None else nan
            self.val_history.append(nan)
            return EpochResult(
                self.epoch, train_loss, train_acc, nan, nan, lr, ema_nan, ema_nan, diverged=True
            )
        if not self._counts:  # CS231n's Solver: accuracy on (up to) 1,000 training rows
            train_acc = protocol.evaluate(self.model, X[:TRAIN_ACC_ROWS], y[:TRAIN_ACC_ROWS])[1]
        val_loss, val_acc = protocol.evaluate(self.model, X_val, y_val)
        ema_loss = ema_acc = None
        if self.ema_params is not None:
            own = dict(self.params)
            self.model.params.update(self.ema_params)  # evaluate the running average
            try:
                ema_loss, ema_acc = protocol.evaluate(self.model, X_val, y_val)
            finally:
                self.model.params.update(own)
        self.val_history.append(val_acc)
        return EpochResult(
            self.epoch, train_loss, train_acc, val_loss, val_acc, lr, ema_loss, ema_acc, False
        )

    def _step_loss(self, xb: np.ndarray, yb: np.ndarray) -> float:
        """The minibatch's loss, its gradients left in ``self._grads``."""
        net = self.model
        loss, grads = net.loss(xb, yb, rng=self.rng) if self._loss_rng else net.loss(xb, yb)
        if self._direct is None:  # first step: are the model's grads views of flat_grads?
            self._direct = all(g is not None and _same_view(g, self._grads.get(k))
                               for k, g in grads.items()) and len(grads) == len(self._grads)
            if not self._direct:
                self._flat_grads, self._grads = model.arena(protocol.shapes_of(self.params),
                                                            DTYPE)
                if not self.opt.slots:
                    self._stepped = ({"params": self._flat}, {"params": self._flat_grads})
                else:
                    self._stepped = (self.params, self._grads)
        if not self._direct:
            fill(self._grads, grads, "gradients")
        return float(loss)

    def _run_minibatches(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float, float, bool]:
        """One pass over a random permutation: ``(mean loss, accuracy, last lr, diverged)``."""
        if X.dtype != DTYPE:
            raise TypeError(f"training data must be {np.dtype(DTYPE)}, got {X.dtype}")
        if X.shape[0] == 0:
            raise ValueError("no training examples")
        h, opt, rng, net = self.hyper, self.opt, self.rng, self.model
        if "momentum" in opt.hyper:
            opt.set_hyper(momentum=schedules.momentum_at(h, self.epoch))
        n, bs = X.shape[0], h.batch_size
        perm = rng.permutation(n)
        y_epoch = y[perm]  # the epoch's labels in step order (n integers: small)
        block = min(n, bs * max(1, GATHER_BYTES // (bs * X[:1].nbytes or 1)))
        buf = np.empty((block, *X.shape[1:]), DTYPE)  # reused by every block
        losses: list[float] = []
        n_correct = 0
        lr = math.nan
        for first in range(0, n, block):
            xs = _gather(X, perm[first : first + block], buf)
            for off in range(0, xs.shape[0], bs):
                start = first + off
                lr = schedules.lr_at(h, self.epoch, self.iteration, self.val_history)
                loss = self._step_loss(xs[off : off + bs], y_epoch[start : start + bs])
                losses.append(loss)
                if self._counts:
                    n_correct += net.n_correct
                if self.initial_loss is None:
                    self.initial_loss = loss
                if not math.isfinite(loss) or loss > h.diverge_factor * self.initial_loss:
                    seen = min(start + bs, n)
                    return float(np.mean(losses)), n_correct / seen, lr, True
                stepped, grads = self._stepped
                opt.step(stepped, grads, lr)
                self.iteration += 1
                if self._flat_ema is not None:
                    _update_average(self._flat_ema, self._flat, h.ema_decay)
        return float(np.mean(losses)), n_correct / n, lr, False


def _gather(X: np.ndarray, idx: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """The rows ``X[idx]`` copied into the first ``len(idx)`` rows of ``buf``.

    One buffer for the whole epoch, so no step allocates a fresh minibatch.
    ``mode="clip"`` because the indices come from a permutation (always valid)
    and the default ``"raise"`` makes ``take`` gather into a temporary first.
    """
    return np.take(X, idx, axis=0, out=buf[: len(idx)], mode="clip")


def _in_arena(params: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``params`` copied into one flat arena: (the arena, views keyed and shaped alike)."""
    flat, views = model.arena({k: p.shape for k, p in params.items()}, DTYPE)
    for k, p in params.items():
        views[k][...] = p
    return flat, views


def _update_average(ema: np.ndarray, params: np.ndarray, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * params``, in place with no temporaries.

    Written as ``params + decay * (ema - params)`` (the same value, three in-place
    passes) over cache-sized runs of the arenas, so each is read from memory once.
    """
    for e_run, p_run in layers.cache_runs(ema, params):
        e_run -= p_run
        e_run *= decay
        e_run += p_run


def _fits(flat: Any, params_flat: np.ndarray) -> bool:
    """Whether ``flat`` can hold a gradient arena for ``params_flat``."""
    return isinstance(flat, np.ndarray) and flat.ndim == 1 and flat.dtype == DTYPE \
        and flat.size == params_flat.size and flat.flags.c_contiguous


def _same_view(a: np.ndarray, b: np.ndarray | None) -> bool:
    """Whether ``a`` and ``b`` are the same memory, shape and strides."""
    return b is not None and isinstance(a, np.ndarray) and a.shape == b.shape \
        and a.strides == b.strides and a.dtype == b.dtype \
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]


def mlp_spec(hyper: Hyper, input_shape: tuple[int, ...], n_classes: int) -> ModelSpec:
    """The built-in MLP with ``hyper``'s hidden widths, dropout, reg and weight scale."""
    return ModelSpec("mlp", MLP, tuple(input_shape), int(n_classes),
                     {"hidden": tuple(hyper.hidden), "dropout": hyper.dropout,
                      "reg": hyper.reg, "weight_scale": hyper.weight_scale})
