"""Update rules against the notes' formulas, the optimizer's API and exact resume."""

from __future__ import annotations

import inspect
import io
import itertools

import numpy as np
import pytest

from worker.nn import layers, optim
from worker.nn.hyper import RULE_NAMES, Hyper

SHAPES = {"W1": (2, 3), "b1": (3,), "W2": (3, 2)}
LRS = [1e-2, 5e-3, 2e-2, 1e-3, 7e-3]  # changes every step
HYPER = {  # non-default values, so a rule that ignored them would fail
    "sgd": {},
    "momentum": {"momentum": 0.8},
    "nesterov": {"momentum": 0.7},
    "adagrad": {"eps": 1e-6},
    "rmsprop": {"decay_rate": 0.9, "eps": 1e-6},
    "adam": {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
}


# Reference formulas, written out separately in float64; each returns (x, state).
def ref_sgd(x, dx, s, lr, t):
    return x - lr * dx, s


def ref_momentum(x, dx, s, lr, t, momentum):
    mu = momentum
    v = mu * s.get("v", 0.0) - lr * dx
    return x + v, {"v": v}


def ref_nesterov(x, dx, s, lr, t, momentum):
    mu = momentum
    v_prev = s.get("v", 0.0)
    v = mu * v_prev - lr * dx
    return x - mu * v_prev + (1 + mu) * v, {"v": v}


def ref_adagrad(x, dx, s, lr, t, eps):
    cache = s.get("cache", 0.0) + dx**2
    return x - lr * dx / (np.sqrt(cache) + eps), {"cache": cache}


def ref_rmsprop(x, dx, s, lr, t, decay_rate, eps):
    cache = decay_rate * s.get("cache", 0.0) + (1 - decay_rate) * dx**2
    return x - lr * dx / (np.sqrt(cache) + eps), {"cache": cache}


def ref_adam(x, dx, s, lr, t, beta1, beta2, eps):
    m = beta1 * s.get("m", 0.0) + (1 - beta1) * dx
    v = beta2 * s.get("v", 0.0) + (1 - beta2) * dx**2
    mhat, vhat = m / (1 - beta1**t), v / (1 - beta2**t)
    return x - lr * mhat / (np.sqrt(vhat) + eps), {"m": m, "v": v}


REFS = {
    "sgd": ref_sgd,
    "momentum": ref_momentum,
    "nesterov": ref_nesterov,
    "adagrad": ref_adagrad,
    "rmsprop": ref_rmsprop,
    "adam": ref_adam,
}


def random_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def run(opt: optim.Optimizer, params, n_steps: int, seed: int, lrs=LRS) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n_steps):
        opt.step(params, random_params(rng), lrs[i % len(lrs)])


@pytest.mark.parametrize("chunk", [None, 4])  # 4: large-parameter path, with a short tail
@pytest.mark.parametrize("name", sorted(optim.RULES))
def test_rule_follows_formula_step_by_step(name, chunk, monkeypatch):
    if chunk:
        monkeypatch.setattr(layers, "RUN", chunk)
    rng = np.random.default_rng(0)
    params = random_params(rng)
    objects = dict(params)  # to check the update is in place
    ref = {k: x.astype(np.float64) for k, x in params.items()}
    ref_state: dict[str, dict] = {k: {} for k in params}
    opt = optim.make(name, **HYPER[name])
    for t, lr in enumerate(LRS, start=1):
        grads = {k: g * 0.1 ** (t % 3) for k, g in random_params(rng).items()}  # varied scale
        opt.step(params, grads, lr)
        for k in params:
            dx = grads[k].astype(np.float64)
            ref[k], ref_state[k] = REFS[name](ref[k], dx, ref_state[k], lr, t, **HYPER[name])
            assert params[k] is objects[k]
            assert params[k].dtype == np.float32
            np.testing.assert_allclose(params[k], ref[k], rtol=1e-5, atol=1e-6)
        sd = opt.state_dict()
        assert sd["t"] == t
        expected_keys = {"t"} | {f"hyper.{h}" for h in HYPER[name]}
        expected_keys |= {f"{k}.{slot}" for k in params for slot in ref_state[k]}
        assert set(sd) == expected_keys
        for k in params:
            for slot, value in ref_state[k].items():
                assert sd[f"{k}.{slot}"].dtype == np.float32
                np.testing.assert_allclose(sd[f"{k}.{slot}"], value, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", sorted(optim.RULES))
def test_float32_stays_float32_with_float64_scalars(name):
    params = random_params(np.random.default_rng(1))
    opt = optim.make(name, **{k: np.float64(v) for k, v in HYPER[name].items()})
    run(opt, params, 3, seed=2, lrs=[np.float64(1e-3)])
    assert all(x.dtype == np.float32 for x in params.values())
    assert all(type(v) is float for v in opt.hyper.values())
    sd = opt.state_dict()
    assert all(a.dtype == np.float32 for k, a in sd.items() if not k.startswith(("t", "hyper.")))


def test_sgd_is_downhill_on_a_quadratic():
    center = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]], dtype=np.float32)
    params = {"W": np.zeros((2, 3), dtype=np.float32)}
    opt = optim.make("sgd")
    losses = []
    for _ in range(10):
        diff = params["W"] - center
        losses.append(0.5 * float(np.sum(diff**2)))
        opt.step(params, {"W": diff}, 0.1)
    assert all(b < a for a, b in itertools.pairwise(losses))
    # one step of size 0.1 shrinks the distance to the centre by exactly 10%
    np.testing.assert_allclose(params["W"], center * (1 - 0.9**10), rtol=1e-5)


def test_make_rejects_unknown_rule_listing_valid_ones():
    with pytest.raises(ValueError, match="adamw") as err:
        optim.make("adamw")
    for name in RULE_NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("name", "bad"),
    [("sgd", "momentum"), ("momentum", "beta1"), ("adam", "decay"), ("rmsprop", "mu")],
)
def test_make_rejects_unknown_hyperparameter_by_name(name, bad):
    with pytest.raises(ValueError, match=f"{name} takes no hyperparameter '{bad}'"):
        optim.make(name, **{bad: 0.9})


def test_defaults_are_the_signatures():
    expected = {
        "sgd": {},
        "momentum": {"momentum": 0.9},
        "nesterov": {"momentum": 0.9},
        "adagrad": {"eps": 1e-8},
        "rmsprop": {"decay_rate": 0.99, "eps": 1e-8},
        "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    }
    for name, rule in optim.RULES.items():
        sig = list(inspect.signature(rule).parameters.values())
        assert [p.name for p in sig[:4]] == ["x", "dx", "state", "lr"]
        from_sig = {p.name: p.default for p in sig[4:]}
        assert from_sig == expected[name]
        assert optim.make(name).hyper == expected[name]
    assert optim.make("adam", beta2=0.9).hyper == {"beta1": 0.9, "beta2": 0.9, "eps": 1e-8}


def test_hyper_optimizer_passes_only_what_the_rule_takes():
    h = dict(momentum=0.5, beta1=0.8, beta2=0.95, eps=1e-7, decay_rate=0.9)
    expected = {
        "sgd": {},
        "momentum": {"momentum": 0.5},
        "nesterov": {"momentum": 0.5},
        "adagrad": {"eps": 1e-7},
        "rmsprop": {"decay_rate": 0.9, "eps": 1e-7},
        "adam": {"beta1": 0.8, "beta2": 0.95, "eps": 1e-7},
    }
    for name, hyper in expected.items():
        opt = Hyper(update_rule=name, **h).optimizer()
        assert opt.name == name
        assert opt.hyper == hyper


def test_set_hyper_changes_the_next_step():
    rng = np.random.default_rng(3)
    start = random_params(rng)
    grads = [random_params(rng) for _ in range(3)]
    ramped, fixed = {k: x.copy() for k, x in start.items()}, {k: x.copy() for k, x in start.items()}
    opt_ramped, opt_fixed = (optim.make("momentum", momentum=0.5) for _ in range(2))
    ref = {k: x.astype(np.float64) for k, x in start.items()}
    ref_state: dict[str, dict] = {k: {} for k in start}
    for i, (g, mu) in enumerate(zip(grads, [0.5, 0.5, 0.99], strict=True)):
        if i == 2:
            opt_ramped.set_hyper(momentum=mu)
        opt_ramped.step(ramped, g, 0.01)
        opt_fixed.step(fixed, g, 0.01)
        for k in start:
            ref[k], ref_state[k] = ref_momentum(
                ref[k], g[k].astype(np.float64), ref_state[k], 0.01, i + 1, momentum=mu
            )
    assert opt_ramped.hyper["momentum"] == 0.99
    for k in start:
        np.testing.assert_allclose(ramped[k], ref[k], rtol=1e-5, atol=1e-7)
        assert not np.allclose(ramped[k], fixed[k], rtol=1e-5, atol=1e-7)


def test_set_hyper_rejects_unknown_names_and_changes_nothing():
    opt = optim.make("adam")
    with pytest.raises(ValueError, match="adam takes no hyperparameter 'momentum'"):
        opt.set_hyper(beta1=0.5, momentum=0.9)
    assert opt.hyper["beta1"] == 0.9


def savez_roundtrip(state: dict[str, np.ndarray]):
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    return np.load(buf, allow_pickle=False)


@pytest.mark.parametrize("name", sorted(optim.RULES))
def test_state_dict_resume_is_bit_identical(name):
    start = random_params(np.random.default_rng(4))
    ramp = {"momentum": 0.95} if "momentum" in optim.make(name).hyper else {}

    whole = {k: x.copy() for k, x in start.items()}
    opt = optim.make(name, **HYPER[name])
    run(opt, whole, 3, seed=5)
    opt.set_hyper(**ramp)
    run(opt, whole, 4, seed=6, lrs=LRS[::-1])

    first = {k: x.copy() for k, x in start.items()}
    opt1 = optim.make(name, **HYPER[name])
    run(opt1, first, 3, seed=5)
    opt1.set_hyper(**ramp)
    saved = opt1.state_dict()
    assert all(isinstance(a, np.ndarray) and a.dtype.kind in "fiu" for a in saved.values())
    params = {k: x.copy() for k, x in first.items()}  # as a checkpoint would hold them
    run(opt1, first, 2, seed=7)  # the lost work after the checkpoint must not leak in

    with savez_roundtrip(saved) as loaded:
        opt2 = optim.make(name)  # default hyper: the state dict restores the trial's
        opt2.load_state_dict(loaded)
    assert opt2.hyper == opt.hyper
    run(opt2, params, 4, seed=6, lrs=LRS[::-1])
    for k in start:
        assert np.array_equal(params[k], whole[k])
    final, expected = opt2.state_dict(), opt.state_dict()
    assert set(final) == set(expected)
    for k in expected:
        assert final[k].dtype == expected[k].dtype
        assert np.array_equal(final[k], expected[k])


def test_state_dict_is_a_copy_and_load_does_not_alias():
    params = random_params(np.random.default_rng(8))
    opt = optim.make("adam")
    run(opt, params, 2, seed=9)
    saved = opt.state_dict()
    before = {k: a.copy() for k, a in saved.items()}
    other = optim.make("adam")
    other.load_state_dict(saved)
    run(opt, params, 1, seed=10)
    run(other, {k: x.copy() for k, x in params.items()}, 1, seed=10)
    for k in saved:
        assert np.array_equal(saved[k], before[k])


@pytest.mark.parametrize("name", sorted(optim.RULES))
def test_runs_and_layouts_give_identical_updates(name, monkeypatch):
    """Whole, chunked, and chunked-but-non-contiguous parameters update the same."""
    rng = np.random.default_rng(11)
    base = {"W": rng.standard_normal((5, 7)).astype(np.float32)}
    grads = [{"W": rng.standard_normal((5, 7)).astype(np.float32)} for _ in range(3)]

    def final(chunk, layout):
        monkeypatch.setattr(layers, "RUN", chunk)
        params = {"W": layout(base["W"].copy())}
        opt = optim.make(name, **HYPER[name])
        for i, g in enumerate(grads):
            opt.step(params, {"W": layout(g["W"].copy())}, LRS[i])
        return np.ascontiguousarray(params["W"]), opt.state_dict()

    whole, whole_state = final(1 << 16, lambda a: a)
    for chunk, layout in [
        (4, np.ascontiguousarray),
        (4, np.asfortranarray),
        (7, np.asfortranarray),
    ]:
        x, state = final(chunk, layout)
        assert np.array_equal(x, whole)
        assert not np.array_equal(x, base["W"])
        for k in whole_state:
            assert np.array_equal(state[k], whole_state[k])


def test_large_parameter_is_updated_in_runs():
    """A parameter bigger than one run (with a tail) follows the formula everywhere."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((301, 250)).astype(np.float32)
    assert x.size > layers.RUN and x.size % layers.RUN
    ref, ref_state = x.astype(np.float64), {}
    opt = optim.make("adam")
    params = {"W": x}
    for t, lr in enumerate(LRS[:3], start=1):
        dx = rng.standard_normal(x.shape).astype(np.float32)
        opt.step(params, {"W": dx}, lr)
        ref, ref_state = ref_adam(ref, dx.astype(np.float64), ref_state, lr, t, 0.9, 0.999, 1e-8)
    assert params["W"] is x
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(opt.state_dict()["W.v"], ref_state["v"], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", sorted(optim.RULES))
def test_large_parameter_keeps_only_a_run_sized_scratch(name):
    """Temporaries live in one run-sized buffer (cache-resident), never a full-size one."""
    rng = np.random.default_rng(15)
    params = {"W": rng.standard_normal((301, 250)).astype(np.float32)}
    opt = optim.make(name)
    opt.step(params, {"W": np.ones_like(params["W"])}, 1e-3)
    assert opt._states["W"]["scratch"].size == layers.RUN < params["W"].size
    restored = optim.make(name)
    restored.load_state_dict(opt.state_dict())
    restored.step(params, {"W": np.ones_like(params["W"])}, 1e-3)
    assert restored._states["W"]["scratch"].size == layers.RUN


def test_load_state_dict_rejects_another_rules_state():
    params = random_params(np.random.default_rng(13))
    momentum = optim.make("momentum")
    run(momentum, params, 1, seed=14)
    with pytest.raises(ValueError, match=r"adam state is missing W1\.m"):
        optim.make("adam").load_state_dict(momentum.state_dict())
    with pytest.raises(ValueError, match="rmsprop keeps no state slot 'v'"):
        optim.make("rmsprop").load_state_dict(momentum.state_dict())
    with pytest.raises(ValueError, match="sgd takes no hyperparameter 'momentum'"):
        optim.make("sgd").load_state_dict({"t": np.array(1), "hyper.momentum": np.array(0.9)})


@pytest.mark.parametrize("name", ["momentum", "nesterov"])
def test_load_state_dict_reads_the_old_name_mu(name):
    """Checkpoints written before ``mu`` became ``momentum`` resume with their value."""
    params = random_params(np.random.default_rng(16))
    opt = optim.make(name, momentum=0.6)
    run(opt, params, 2, seed=17)
    old = {("hyper.mu" if k == "hyper.momentum" else k): a for k, a in opt.state_dict().items()}
    assert "hyper.mu" in old
    restored = optim.make(name)
    restored.load_state_dict(old)
    assert restored.hyper == {"momentum": 0.6}
    after, expected = {k: x.copy() for k, x in params.items()}, params
    run(restored, after, 2, seed=18)
    run(opt, expected, 2, seed=18)
    for k in params:
        assert np.array_equal(after[k], expected[k])


def test_slot_names():
    expected = {
        "sgd": (),
        "momentum": ("v",),
        "nesterov": ("v",),
        "adagrad": ("cache",),
        "rmsprop": ("cache",),
        "adam": ("m", "v"),
    }
    assert {name: optim.slot_names(name) for name in optim.RULES} == expected


def test_parameter_names_that_clash_with_state_keys_are_rejected():
    opt = optim.make("sgd")
    for bad in ("t", "hyper"):
        with pytest.raises(ValueError, match="clashes"):
            opt.step({bad: np.zeros(2, np.float32)}, {bad: np.ones(2, np.float32)}, 0.1)
