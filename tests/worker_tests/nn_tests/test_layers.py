"""Numeric gradient checks (float64, centred differences) for every layer and the full loss."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.nn import layers, model
from worker.nn.gradcheck import eval_numerical_gradient, eval_numerical_gradient_array, rel_error

TOL = 1e-7  # observed errors are ~1e-9 on these smooth points


def away_from_zero(x: np.ndarray, margin: float = 0.05) -> np.ndarray:
    """Push entries off the ReLU kink so centred differences stay smooth."""
    x[np.abs(x) < margin] += 2 * margin
    return x


def test_affine_backward_matches_numeric_gradient():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal((5, 4)), rng.standard_normal(4)
    dout = rng.standard_normal((3, 4))
    out, cache = layers.affine_forward(x, w, b)
    np.testing.assert_allclose(out, x @ w + b)
    dx, dw, db = layers.affine_backward(dout, cache)
    assert (
        rel_error(
            dx, eval_numerical_gradient_array(lambda v: layers.affine_forward(v, w, b)[0], x, dout)
        )
        < TOL
    )
    assert (
        rel_error(
            dw, eval_numerical_gradient_array(lambda v: layers.affine_forward(x, v, b)[0], w, dout)
        )
        < TOL
    )
    assert (
        rel_error(
            db, eval_numerical_gradient_array(lambda v: layers.affine_forward(x, w, v)[0], b, dout)
        )
        < TOL
    )


def test_affine_backward_without_input_gradient():
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal((5, 4)), np.zeros(4)
    dout = rng.standard_normal((3, 4))
    _, cache = layers.affine_forward(x, w, b)
    dx, dw, db = layers.affine_backward(dout, cache, need_dx=False)
    assert dx is None
    np.testing.assert_allclose(dw, x.T @ dout)
    np.testing.assert_allclose(db, dout.sum(axis=0))


def test_relu_backward_matches_numeric_gradient():
    rng = np.random.default_rng(2)
    x = away_from_zero(rng.standard_normal((4, 6)))
    dout = rng.standard_normal((4, 6))
    out, cache = layers.relu_forward(x.copy())
    assert (out >= 0).all() and np.array_equal(out, np.maximum(x, 0))
    dx = layers.relu_backward(dout, cache)
    assert (
        rel_error(dx, eval_numerical_gradient_array(lambda v: layers.relu_forward(v)[0], x, dout))
        < TOL
    )
    assert np.all(dx[x < 0] == 0)


def test_relu_in_place_forms_agree():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    buf = x.copy()
    out, _ = layers.relu_forward(buf, out=buf)
    assert out is buf and np.array_equal(out, np.maximum(x, 0)) and out.dtype == np.float32


def test_dropout_backward_matches_numeric_gradient_with_a_seeded_mask():
    rng = np.random.default_rng(4)
    x, dout, p = rng.standard_normal((5, 8)), rng.standard_normal((5, 8)), 0.4

    def forward(v: np.ndarray) -> np.ndarray:
        return layers.dropout_forward(v, p, np.random.default_rng(7))[0]

    out, mask = layers.dropout_forward(x, p, np.random.default_rng(7))
    np.testing.assert_array_equal(out, forward(x))  # same seed, same mask
    dx = layers.dropout_backward(dout, mask)
    assert rel_error(dx, eval_numerical_gradient_array(forward, x, dout)) < TOL


def test_dropout_is_inverted_and_drops_at_rate_p():
    x = np.ones((400, 500), dtype=np.float32)
    p = 0.3
    out, mask = layers.dropout_forward(x, p, np.random.default_rng(5))
    assert out.dtype == np.float32 and mask.dtype == np.float32
    kept = out != 0
    assert abs(kept.mean() - (1 - p)) < 0.01
    np.testing.assert_allclose(out[kept], 1 / (1 - p), rtol=1e-6)  # kept units rescaled
    assert abs(out.mean() - 1.0) < 0.02  # expectation preserved
    other, _ = layers.dropout_forward(x, p, np.random.default_rng(6))
    assert not np.array_equal(out, other)


def test_softmax_loss_matches_numeric_gradient():
    rng = np.random.default_rng(8)
    scores, y = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    loss, dscores = layers.softmax_loss(scores, y)
    numeric = eval_numerical_gradient(lambda s: layers.softmax_loss(s, y)[0], scores)
    assert rel_error(dscores, numeric) < TOL
    p = np.exp(scores - scores.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(6), y]).mean(), rel=1e-12)


def test_softmax_loss_is_ln_c_for_equal_scores_and_stable_for_huge_ones():
    loss, _ = layers.softmax_loss(np.zeros((5, 10)), np.arange(5))
    assert loss == pytest.approx(math.log(10))
    huge = np.array([[1e4, 0.0, -1e4]], dtype=np.float32)
    loss, dscores = layers.softmax_loss(huge.copy(), np.array([2]))
    assert loss == pytest.approx(2e4, rel=1e-6)  # no log(0) = inf
    assert np.isfinite(dscores).all()


def test_softmax_loss_in_place_equals_out_of_place():
    rng = np.random.default_rng(9)
    scores, y = rng.standard_normal((6, 4)).astype(np.float32), rng.integers(0, 4, 6)
    loss, dscores = layers.softmax_loss(scores, y)
    buf = scores.copy()
    loss2, d2 = layers.softmax_loss(buf, y, out=buf)
    assert d2 is buf and loss == loss2 and np.array_equal(dscores, d2)
    assert d2.dtype == np.float32


def model_case(hidden: tuple[int, ...], seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = model.init_params((5, *hidden, 4), rng, 0.0, np.float64)
    for k in params:  # nonzero biases, so their gradients are checked too
        params[k] += 0.1 * rng.standard_normal(params[k].shape)
    return params, rng.standard_normal((3, 5)), rng.integers(0, 4, 3)


MODEL_CASES = [
    (hidden, reg, dropout)
    for hidden in [(), (7,), (6, 5)]  # depth 0 (softmax classifier), 1 and 2
    for reg in (0.0, 0.7)
    for dropout in (0.0, 0.4)
    if hidden or not dropout  # a softmax classifier has no hidden units to drop
]


@pytest.mark.parametrize(("hidden", "reg", "dropout"), MODEL_CASES)
def test_full_model_gradients_match_numeric(hidden, reg, dropout):
    params, X, y = model_case(hidden, seed=len(hidden) + 10 * int(reg > 0))

    def loss_of(_: np.ndarray) -> float:
        # a fresh generator with the same seed: the same dropout mask every call
        return model.loss_and_grads(params, X, y, reg, dropout, np.random.default_rng(3))[0]

    loss, grads = model.loss_and_grads(params, X, y, reg, dropout, np.random.default_rng(3))
    assert loss == loss_of(params["W1"])
    assert set(grads) == set(params)
    for name, p in params.items():
        err = rel_error(grads[name], eval_numerical_gradient(loss_of, p))
        assert err < TOL, f"{name}: relative error {err:.2e}"


def test_regularisation_adds_half_reg_sum_of_squared_weights_only():
    params, X, y = model_case((7,), seed=11)
    plain, _ = model.loss_and_grads(params, X, y, reg=0.0)
    regd, _ = model.loss_and_grads(params, X, y, reg=0.7)
    penalty = 0.5 * 0.7 * (np.sum(params["W1"] ** 2) + np.sum(params["W2"] ** 2))
    assert regd - plain == pytest.approx(penalty, rel=1e-10)


def test_gradcheck_helpers_on_known_functions():
    x = np.random.default_rng(12).standard_normal((3, 4))
    np.testing.assert_allclose(
        eval_numerical_gradient(lambda v: np.sum(v**3), x), 3 * x**2, atol=1e-9
    )
    df = np.ones_like(x)
    np.testing.assert_allclose(eval_numerical_gradient_array(np.sin, x, df), np.cos(x), rtol=1e-8)
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert rel_error(np.array([1.0]), np.array([1.1])) == pytest.approx(0.1 / 2.1)


def test_softmax_loss_into_a_non_contiguous_buffer():
    """``out`` may be a strided view: the gradient still lands in it."""
    rng = np.random.default_rng(31)
    scores, y = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    want_loss, want = layers.softmax_loss(scores, y)
    wide = np.zeros((6, 8))
    loss, got = layers.softmax_loss(scores, y, out=wide[:, ::2])
    assert loss == want_loss
    assert np.array_equal(wide[:, ::2], want) and got.base is wide
