"""Any model of the CS231n protocol, trained by the one trainer: arena views, gradients in
any order, a model's own randomness resumed bit-exactly, checkpoints that rebuild it."""

from __future__ import annotations

import numpy as np
import pytest

from worker.nn.checkpoint import CheckpointError
from worker.nn.hyper import Hyper
from worker.nn.protocol import ModelSpec, predict_proba
from worker.nn.saved import model_from_checkpoint
from worker.nn.training import TrainState


class NoisySoftmax:
    """A softmax classifier that keeps the generator it was built with and adds Gaussian
    noise to its inputs in training (randomness outside ``loss``'s arguments); it counts
    no correct predictions and returns its gradients in reverse order."""

    def __init__(self, input_shape, num_classes, noise=0.5, reg=0.0, rng=None):
        d = int(np.prod(input_shape))
        self.rng, self.noise, self.reg = rng, noise, reg
        self.params = {"W": 0.01 * rng.standard_normal((d, num_classes)),
                       "b": np.zeros(num_classes)}

    def loss(self, X, y=None):
        X = X.reshape(X.shape[0], -1)
        W, b = self.params["W"], self.params["b"]
        if y is None:
            return X @ W + b
        X = X + self.noise * self.rng.standard_normal(X.shape).astype(X.dtype)
        s = X @ W + b
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        n = X.shape[0]
        loss = -np.log(p[np.arange(n), y]).mean() + 0.5 * self.reg * np.sum(W * W)
        p[np.arange(n), y] -= 1
        p /= n
        return float(loss), {"b": p.sum(axis=0), "W": X.T @ p + self.reg * W}


SHAPE, C = (2, 3, 3), 4
SPEC = ModelSpec("noisy", NoisySoftmax, SHAPE, C, {"noise": 0.5, "reg": 1e-3})


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    X = (rng.standard_normal((n, *SHAPE)) + y[:, None, None, None]).astype(np.float32)
    return X, y


TRAIN, VAL = data(200, 0), data(50, 1)


def epochs(state: TrainState, n: int) -> list[tuple]:
    return [tuple(vars(state.train_epoch(*TRAIN, *VAL)).values()) for _ in range(n)]


@pytest.mark.parametrize("rule", ["sgd", "adam"])
def test_a_model_keeping_its_generator_resumes_bit_exactly(rule: str) -> None:
    h = Hyper(learning_rate=0.05, batch_size=32, update_rule=rule, ema_decay=0.9)
    straight = TrainState.create(h, SHAPE, C, 7, SPEC)
    expected = epochs(straight, 4)
    first = TrainState.create(h, SHAPE, C, 7, SPEC)
    got = epochs(first, 2)
    resumed = TrainState.from_checkpoint(h, first.to_checkpoint(), SPEC)
    got += epochs(resumed, 2)
    assert got == expected
    for k in straight.params:
        assert straight.params[k].tobytes() == resumed.params[k].tobytes()


def test_params_are_views_of_one_float32_arena_and_training_learns() -> None:
    state = TrainState.create(Hyper(learning_rate=0.05, batch_size=20), SHAPE, C, 1, SPEC)
    net = state.model
    assert all(net.params[k] is state.params[k] and p.dtype == np.float32
               for k, p in net.params.items())
    assert np.shares_memory(net.params["W"], net.params["b"].base)
    results = epochs(state, 10)
    # no n_correct: the training accuracy of (up to) 1,000 training rows, as a number
    assert all(0.0 <= r[2] <= 1.0 for r in results)
    assert results[-1][4] > 0.5  # val_acc: the classes are separable


def test_checkpoint_rebuilds_the_model_with_raw_and_average_weights() -> None:
    h = Hyper(learning_rate=0.1, batch_size=50, ema_decay=0.5)
    state = TrainState.create(h, SHAPE, C, 2, SPEC)
    epochs(state, 2)
    blob = state.to_checkpoint()
    raw = model_from_checkpoint(blob, {"noisy": NoisySoftmax}.__getitem__)
    ema = model_from_checkpoint(blob, {"noisy": NoisySoftmax}.__getitem__, "ema")
    np.testing.assert_array_equal(predict_proba(raw, VAL[0]), predict_proba(state.model, VAL[0]))
    assert raw.noise == 0.5 and raw.reg == 1e-3  # the constructor's hyperparameters travel
    assert not np.array_equal(raw.params["W"], ema.params["W"])
    np.testing.assert_array_equal(ema.params["W"], state.ema_params["W"])


def test_a_checkpoint_of_another_model_or_shape_is_refused() -> None:
    h = Hyper(learning_rate=0.1, batch_size=50)
    blob = TrainState.create(h, SHAPE, C, 3, SPEC).to_checkpoint()
    other = ModelSpec("other", NoisySoftmax, SHAPE, C, {})
    with pytest.raises(CheckpointError, match="model noisy"):
        TrainState.from_checkpoint(h, blob, other)
    wider = ModelSpec("noisy", NoisySoftmax, (3, 3, 3), C, {})
    with pytest.raises(CheckpointError, match="shape"):
        TrainState.from_checkpoint(h, blob, wider)


def test_gradients_that_do_not_match_params_are_named() -> None:
    class Broken(NoisySoftmax):
        def loss(self, X, y=None):
            out = super().loss(X, y)
            return out if y is None else (out[0], {"W": out[1]["W"]})

    spec = ModelSpec("broken", Broken, SHAPE, C, {})
    state = TrainState.create(Hyper(batch_size=50), SHAPE, C, 4, spec)
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        epochs(state, 1)


def test_a_model_without_a_params_dict_is_refused() -> None:
    class NoParams:
        def __init__(self, input_shape, num_classes):
            self.params = {"W": [1.0]}

        def loss(self, X, y=None):
            return X

    with pytest.raises(TypeError, match="float array"):
        ModelSpec("np", NoParams, SHAPE, C).build(None)
