"""TrainState: exact resume from checkpoints, EMA, divergence, predictions."""

from __future__ import annotations

import dataclasses
import math
import tracemalloc

import numpy as np
import pytest

from worker.nn import training
from worker.nn.checkpoint import CheckpointError
from worker.nn.hyper import RULE_NAMES, SCHEDULE_KINDS, Hyper
from worker.nn.protocol import predict_proba
from worker.nn.saved import params_from_checkpoint
from worker.nn.training import TrainState

N_FEATURES, N_CLASSES = 10, 4


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around fixed centres (the same for every split)."""
    centres = np.random.default_rng(0).standard_normal((N_CLASSES, N_FEATURES)) * 3
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    return (centres[y] + rng.standard_normal((n, N_FEATURES))).astype(np.float32), y


TRAIN = blobs(230, seed=1)  # 230 = 7 batches of 32 + a ragged one of 6
VAL = blobs(60, seed=2)
LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.05, "rmsprop": 3e-3}


def hyper(rule: str = "sgd", schedule: str = "constant", **kw) -> Hyper:
    settings = dict(
        learning_rate=LR.get(rule, 3e-3),
        hidden=(16, 12),
        batch_size=32,
        update_rule=rule,
        dropout=0.25,
        reg=1e-3,
        ema_decay=0.9,
        schedule=schedule,
        schedule_every=1,
        schedule_patience=1,
        schedule_k=0.3,
        momentum_schedule=(0.5, 0.8, 0.9),
    )
    settings.update(kw)
    return Hyper(**settings)


def train(state: TrainState, epochs: int) -> list[training.EpochResult]:
    return [state.train_epoch(*TRAIN, *VAL) for _ in range(epochs)]


def assert_same_state(a: TrainState, b: TrainState) -> None:
    assert a.epoch == b.epoch and a.iteration == b.iteration
    assert a.initial_loss == b.initial_loss and a.val_history == b.val_history
    assert a.params.keys() == b.params.keys()
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    if a.ema_params is None:
        assert b.ema_params is None
    else:
        assert all(np.array_equal(a.ema_params[k], b.ema_params[k]) for k in a.ema_params)
    sa, sb = a.opt.state_dict(), b.opt.state_dict()
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


@pytest.mark.parametrize("schedule", SCHEDULE_KINDS)
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_resume_is_bit_identical(rule, schedule):
    h = hyper(rule, schedule, schedule_unit="iteration" if schedule == "exponential" else "epoch")
    straight = TrainState.create(h, N_FEATURES, N_CLASSES, seed=3)
    expected = train(straight, 4)

    first = TrainState.create(h, N_FEATURES, N_CLASSES, seed=3)
    got = train(first, 2)
    resumed = TrainState.from_checkpoint(h, first.to_checkpoint())
    assert_same_state(resumed, first)
    got += train(resumed, 2)

    assert got == expected  # every metric, bit for bit (no NaNs in these runs)
    assert_same_state(resumed, straight)
    assert not any(r.diverged for r in got)
    if schedule != "constant" and schedule != "plateau":
        assert len({r.lr for r in got}) == 4  # the schedule really moved the rate


@pytest.mark.parametrize("ema_decay", [0.0, 0.95], ids=["ema_off", "ema_on"])
def test_resume_from_a_fresh_state_and_with_ema_on_or_off(ema_decay):
    h = hyper("nesterov", "step", ema_decay=ema_decay)
    straight = TrainState.create(h, N_FEATURES, N_CLASSES, seed=4)
    expected = train(straight, 3)
    fresh = TrainState.create(h, N_FEATURES, N_CLASSES, seed=4)
    resumed = TrainState.from_checkpoint(h, fresh.to_checkpoint())
    got = train(resumed, 1)
    got += train(TrainState.from_checkpoint(h, resumed.to_checkpoint()), 2)
    assert got == expected
    if ema_decay:
        assert all(r.ema_val_acc is not None and r.ema_val_loss is not None for r in got)
        assert not np.array_equal(straight.ema_params["W1"], straight.params["W1"])
    else:
        assert straight.ema_params is None
        assert all(r.ema_val_acc is None and r.ema_val_loss is None for r in got)


def test_learning_happens_and_metrics_are_sane():
    state = TrainState.create(hyper("adam", dropout=0.0), N_FEATURES, N_CLASSES, seed=5)
    results = train(state, 5)
    assert [r.epoch for r in results] == [1, 2, 3, 4, 5] and state.epoch == 5
    assert state.iteration == 5 * 8
    assert results[-1].val_acc > 0.8 and results[-1].train_acc > 0.8
    assert results[-1].train_loss < results[0].train_loss
    assert state.val_history == [r.val_acc for r in results]
    assert math.isfinite(state.initial_loss) and state.initial_loss > results[-1].train_loss


def test_seed_decides_everything():
    a = TrainState.create(hyper(), N_FEATURES, N_CLASSES, seed=6)
    b = TrainState.create(hyper(), N_FEATURES, N_CLASSES, seed=6)
    c = TrainState.create(hyper(), N_FEATURES, N_CLASSES, seed=7)
    assert train(a, 2) == train(b, 2)
    assert not np.array_equal(a.params["W1"], c.params["W1"])


def test_no_global_random_state_is_used():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    train(TrainState.create(hyper(), N_FEATURES, N_CLASSES, seed=8), 1)
    assert np.array_equal(np.random.get_state()[1], before)


def test_ema_follows_its_formula_after_one_step():
    X, y = TRAIN[0][:32], TRAIN[1][:32]  # one minibatch: exactly one step
    h = hyper(ema_decay=0.9, dropout=0.0)
    state = TrainState.create(h, N_FEATURES, N_CLASSES, seed=9)
    start = {k: p.copy() for k, p in state.params.items()}
    state.train_epoch(X, y, *VAL)
    for k, p in state.params.items():
        assert state.ema_params[k].dtype == np.float32
        np.testing.assert_allclose(state.ema_params[k], 0.9 * start[k] + 0.1 * p, atol=1e-6)


def test_absurd_learning_rate_diverges_at_once():
    h = hyper("sgd", learning_rate=1e6, ema_decay=0.0)
    state = TrainState.create(h, N_FEATURES, N_CLASSES, seed=10)
    result = state.train_epoch(*TRAIN, *VAL)
    assert result.diverged
    assert state.iteration < 7  # stopped before the end of the epoch
    assert not (result.train_loss <= h.diverge_factor * state.initial_loss)  # big or NaN
    assert math.isnan(result.val_acc) and math.isnan(result.val_loss)
    assert result.ema_val_acc is None


def test_sensible_learning_rate_does_not_diverge():
    state = TrainState.create(hyper("sgd"), N_FEATURES, N_CLASSES, seed=10)
    assert not any(r.diverged for r in train(state, 3))


def test_predict_proba_rows_sum_to_one():
    state = TrainState.create(hyper(), N_FEATURES, N_CLASSES, seed=11)
    train(state, 2)
    state.model.eval_batch = 16  # several batches
    probs = predict_proba(state.model, VAL[0])
    assert probs.shape == (60, N_CLASSES) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert (probs >= 0).all()


def test_params_from_checkpoint():
    state = TrainState.create(hyper(), N_FEATURES, N_CLASSES, seed=12)
    train(state, 1)
    data = state.to_checkpoint()
    raw, ema = params_from_checkpoint(data), params_from_checkpoint(data, "ema")
    assert all(np.array_equal(raw[k], state.params[k]) for k in state.params)
    assert all(np.array_equal(ema[k], state.ema_params[k]) for k in state.params)
    with pytest.raises(ValueError):
        params_from_checkpoint(data, "best")
    no_ema = TrainState.create(hyper(ema_decay=0.0), N_FEATURES, N_CLASSES, seed=12)
    with pytest.raises(CheckpointError):
        params_from_checkpoint(no_ema.to_checkpoint(), "ema")


@pytest.mark.parametrize(
    "change",
    [{"hidden": (16,)}, {"update_rule": "adam"}, {"ema_decay": 0.0}],
    ids=["architecture", "rule", "ema"],
)
def test_checkpoint_for_another_trial_is_refused(change):
    data = TrainState.create(hyper(), N_FEATURES, N_CLASSES, seed=13).to_checkpoint()
    with pytest.raises(CheckpointError):
        TrainState.from_checkpoint(dataclasses.replace(hyper(), **change), data)


def test_corrupt_checkpoint_is_refused():
    data = bytearray(TrainState.create(hyper(), N_FEATURES, N_CLASSES, seed=14).to_checkpoint())
    data[len(data) // 3] ^= 0xFF
    with pytest.raises(CheckpointError):
        TrainState.from_checkpoint(hyper(), bytes(data))


def test_float64_training_data_is_refused():
    state = TrainState.create(hyper(), N_FEATURES, N_CLASSES, seed=15)
    with pytest.raises(TypeError):
        state.train_epoch(TRAIN[0].astype(np.float64), TRAIN[1], *VAL)


def test_an_epoch_never_copies_the_training_set():
    rng = np.random.default_rng(16)
    X = rng.standard_normal((20_000, 100), dtype=np.float32)  # 8 MB
    y = rng.integers(0, N_CLASSES, 20_000)
    h = hyper("adam", hidden=(32,), batch_size=256, ema_decay=0.99)
    state = TrainState.create(h, 100, N_CLASSES, seed=17)
    tracemalloc.start()
    try:
        state.train_epoch(X, y, X[:2000], y[:2000])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * X.nbytes


def test_layout_of_the_training_data_does_not_change_training():
    """Minibatches are gathered into a reused buffer: any layout of X trains identically."""
    h = hyper("adam")
    X, y = TRAIN
    wide = np.zeros((X.shape[0], 2 * N_FEATURES), np.float32)
    wide[:, ::2] = X
    layouts = {"C": X, "F": np.asfortranarray(X), "strided": wide[:, ::2]}
    runs = {}
    for name, data in layouts.items():
        state = TrainState.create(h, N_FEATURES, N_CLASSES, seed=18)
        runs[name] = ([state.train_epoch(data, y, *VAL) for _ in range(2)], state)
    expected, reference = runs["C"]
    for results, state in runs.values():
        assert results == expected  # the ragged last batch included (230 = 7 * 32 + 6)
        assert_same_state(state, reference)
