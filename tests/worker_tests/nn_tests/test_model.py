"""The classifier: sanity checks (loss ln C, overfitting), float32 discipline, buffer reuse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.nn import model, optim


def blobs(n: int, d: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    X = rng.standard_normal((c, d))[y] * 2 + rng.standard_normal((n, d))
    return X.astype(np.float32), y


@pytest.mark.parametrize("hidden", [(), (50,), (40, 30)])
def test_fresh_net_loss_is_ln_c(hidden):
    X, y = blobs(200, 30, 10, seed=0)
    params = model.init_params((30, *hidden, 10), np.random.default_rng(1), weight_scale=1e-4)
    loss, _ = model.loss_and_grads(params, X, y)
    assert loss == pytest.approx(math.log(10), abs=1e-3)
    data_loss, _ = model.evaluate(params, X, y)
    assert data_loss == pytest.approx(math.log(10), abs=1e-3)


def test_he_initialisation_scale_and_zero_biases():
    params = model.init_params((1000, 200, 10), np.random.default_rng(2))
    assert params["W1"].std() == pytest.approx(math.sqrt(2 / 1000), rel=0.02)
    assert params["W2"].std() == pytest.approx(math.sqrt(2 / 200), rel=0.05)
    assert not params["b1"].any() and not params["b2"].any()
    scaled = model.init_params((1000, 200, 10), np.random.default_rng(2), weight_scale=0.01)
    assert scaled["W1"].std() == pytest.approx(0.01, rel=0.02)


def test_init_is_reproducible_from_the_generator():
    a = model.init_params((8, 6, 3), np.random.default_rng(5))
    b = model.init_params((8, 6, 3), np.random.default_rng(5))
    c = model.init_params((8, 6, 3), np.random.default_rng(6))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["W1"], c["W1"])


def test_small_net_overfits_50_examples():
    X, y = blobs(50, 20, 5, seed=3)
    y = np.random.default_rng(4).integers(0, 5, 50)  # random labels: only memorising works
    params = model.init_params((20, 64, 5), np.random.default_rng(5))
    net, opt = model.Net((20, 64, 5)), optim.make("adam")
    for _ in range(300):
        loss, grads = net.loss_and_grads(params, X, y)
        opt.step(params, grads, 1e-2)
    _, acc = model.evaluate(params, X, y)
    assert acc == 1.0
    assert loss < 0.05


def test_everything_stays_float32():
    X, y = blobs(64, 12, 4, seed=6)
    params = model.init_params((12, 16, 8, 4), np.random.default_rng(7))
    assert all(p.dtype == np.float32 for p in params.values())
    net = model.Net((12, 16, 8, 4))
    opt = optim.make("nesterov", momentum=0.9)
    for _ in range(3):
        loss, grads = net.loss_and_grads(params, X, y, 1e-3, 0.5, np.random.default_rng(8))
        opt.step(params, grads, 1e-2)
    assert isinstance(loss, float)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert all(p.dtype == np.float32 for p in params.values())
    buffers = [a for ws in net._work.values() for a in (*ws.out, *ws.dh, *ws.mask)]
    buffers.append(net._scratch)
    assert buffers and all(a.dtype == np.float32 for a in buffers)
    assert model.scores(params, X).dtype == np.float32
    assert model.predict_proba(params, X).dtype == np.float32


def test_float64_data_is_refused_by_a_float32_net():
    X, y = blobs(10, 4, 3, seed=9)
    params = model.init_params((4, 5, 3), np.random.default_rng(0))
    with pytest.raises(TypeError, match="float64"):
        model.Net((4, 5, 3)).loss_and_grads(params, X.astype(np.float64), y)


def test_reused_buffers_give_the_same_results_as_a_fresh_net():
    X, y = blobs(40, 10, 3, seed=10)
    params = model.init_params((10, 9, 7, 3), np.random.default_rng(11))
    net = model.Net((10, 9, 7, 3))
    for rows in (slice(0, 32), slice(32, 40), slice(8, 40), slice(0, 32)):
        loss, grads = net.loss_and_grads(params, X[rows], y[rows], reg=0.1)
        ref_loss, ref_grads = model.loss_and_grads(params, X[rows], y[rows], reg=0.1)
        assert loss == ref_loss
        assert all(np.array_equal(grads[k], ref_grads[k]) for k in grads)
        n_correct = np.count_nonzero(model.scores(params, X[rows]).argmax(1) == y[rows])
        assert net.n_correct == n_correct


def test_evaluate_and_predict_proba_match_a_float64_reference():
    X, y = blobs(300, 10, 4, seed=12)
    params = model.init_params((10, 16, 4), np.random.default_rng(13))
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    s = np.maximum(X @ p64["W1"] + p64["b1"], 0) @ p64["W2"] + p64["b2"]
    probs = np.exp(s - s.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    loss, acc = model.evaluate(params, X, y, batch=64)  # several batches, a ragged last one
    assert loss == pytest.approx(-np.log(probs[np.arange(300), y]).mean(), rel=1e-5)
    assert acc == np.mean(probs.argmax(1) == y)
    got = model.predict_proba(params, X, batch=64)
    assert got.shape == (300, 4)
    np.testing.assert_allclose(got, probs, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1, rtol=1e-6)


def test_evaluate_on_no_rows_is_nan():
    params = model.init_params((4, 3), np.random.default_rng(0))
    loss, acc = model.evaluate(params, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert math.isnan(loss) and math.isnan(acc)
