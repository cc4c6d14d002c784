"""Distributions: seeded sampling, log-uniformity, integers, plain types, round trips."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from coordinator.space import (
    Choice,
    Range,
    dist_from_dict,
    dist_from_row,
    sample_configs,
    space_from_rows,
)

SPACE = {
    "learning_rate": Range(1e-6, 1e-1, "log"),
    "dropout": Range(0.0, 0.5),
    "hidden_size": Range(16, 512, "log", integer=True),
    "batch_size": Range(16, 128, integer=True),
    "update_rule": Choice(("sgd", "adam", "nesterov")),
    "momentum": Choice((0.5, 0.9, 0.95, 0.99)),
}
N = 10_000


def draws(dist, n=N, seed=0):
    rng = np.random.default_rng(seed)
    return [dist.sample(rng) for _ in range(n)]


def test_same_seed_same_samples_and_other_seed_differs():
    a = sample_configs(SPACE, 50, np.random.default_rng(7))
    b = sample_configs(SPACE, 50, np.random.default_rng(7))
    c = sample_configs(SPACE, 50, np.random.default_rng(8))
    assert a == b
    assert a != c
    assert len(a) == 50 and all(set(cfg) == set(SPACE) for cfg in a)


def test_samples_do_not_depend_on_the_mapping_order_and_prefixes_agree():
    reordered = dict(reversed(list(SPACE.items())))
    assert sample_configs(SPACE, 20, np.random.default_rng(1)) == \
        sample_configs(reordered, 20, np.random.default_rng(1))
    assert sample_configs(SPACE, 5, np.random.default_rng(1)) == \
        sample_configs(SPACE, 20, np.random.default_rng(1))[:5]


def test_samples_are_plain_python_types_that_go_to_json():
    for cfg in sample_configs(SPACE, 200, np.random.default_rng(0)):
        for name, value in cfg.items():
            expected = {"hidden_size": int, "batch_size": int, "update_rule": str}.get(name, float)
            assert type(value) is expected, (name, type(value))  # np.float64 is a float subclass
        json.dumps(cfg)


@pytest.mark.parametrize("dist", list(SPACE.values()), ids=list(SPACE))
def test_every_sample_is_contained(dist):
    assert all(dist.contains(v) for v in draws(dist, 2000))


def test_log_uniform_puts_the_same_share_in_every_decade():
    values = np.array(draws(Range(1e-6, 1e-1, "log")))
    decades = np.floor(np.log10(values)).astype(int)
    shares = np.array([np.mean(decades == d) for d in range(-6, -1)])
    assert np.all(np.abs(shares - 0.2) < 0.02), shares
    # a linear sampler would put ~90% in the top decade: the check above tells them apart
    linear = np.array(draws(Range(1e-6, 1e-1)))
    assert np.mean(linear >= 1e-2) > 0.85


@pytest.mark.parametrize("dist, expected", [
    (Range(1, 3, integer=True), {1, 2, 3}),
    (Range(-2, 2, integer=True), {-2, -1, 0, 1, 2}),
    (Range(1, 10, "log", integer=True), set(range(1, 11))),
], ids=["int_uniform", "int_uniform_negative", "int_log_uniform"])
def test_integer_ranges_are_inclusive_and_integral(dist, expected):
    values = draws(dist)
    assert all(type(v) is int for v in values)
    assert set(values) == expected


def test_int_uniform_is_uniform_and_int_log_uniform_favours_small_values():
    counts = Counter(draws(Range(1, 4, integer=True)))
    assert all(abs(counts[k] / N - 0.25) < 0.02 for k in range(1, 5)), counts
    log_counts = Counter(draws(Range(1, 100, "log", integer=True)))
    assert sum(log_counts[k] for k in range(1, 10)) / N == pytest.approx(
        math.log10(9.5 / 0.5) / math.log10(100.5 / 0.5), abs=0.02)


def test_choice_is_uniform():
    counts = Counter(draws(SPACE["momentum"]))
    assert set(counts) == {0.5, 0.9, 0.95, 0.99}
    assert all(abs(c / N - 0.25) < 0.02 for c in counts.values()), counts


@pytest.mark.parametrize("dist", [
    *SPACE.values(),
    Range(1e-5, 1e-2, "log", min=1e-8, max=1.0),
    Range(2, 9, integer=True, min=1, max=10),
    Choice((32, 64, 128)),
], ids=lambda d: repr(d)[:40])
def test_dict_and_row_round_trips(dist):
    as_dict = json.loads(json.dumps(dist.to_dict()))
    assert dist_from_dict(as_dict) == dist
    assert type(dist).from_dict(as_dict) == dist
    row = json.loads(json.dumps(dist.to_row()))
    assert set(row) == {"low", "high", "scale", "integer", "choices"}
    assert row["scale"] in ("linear", "log", "choice")
    # rows do not carry the user's min/max; the config's distribution supplies them
    assert dist_from_row({**row, "stage_id": 3, "param": "x"}, base=dist) == dist


def test_row_values_keep_their_types_and_limits_come_from_base():
    row = Range(16, 512, "log", integer=True).to_row()
    assert row == {"low": 16.0, "high": 512.0, "scale": "log", "integer": True, "choices": None}
    back = dist_from_row(row)
    assert (back.low, back.high) == (16, 512) and type(back.low) is int
    choice_row = Choice(("sgd", "adam")).to_row()
    assert json.loads(choice_row["choices"]) == ["sgd", "adam"]
    base = {"reg": Range(1e-4, 1.0, "log", min=1e-6)}
    rows = [{"param": "reg", **Range(1e-3, 1e-1, "log").to_row()},
            {"param": "update_rule", **choice_row}]
    space = space_from_rows(rows, base)
    assert space["reg"] == Range(1e-3, 1e-1, "log", min=1e-6)
    assert space["update_rule"] == Choice(("sgd", "adam"))


@pytest.mark.parametrize("make", [
    lambda: Range(1, 1),
    lambda: Range(2, 1),
    lambda: Range(0, 1, "log"),
    lambda: Range(-1, 1, "log"),
    lambda: Range(1.5, 3, integer=True),
    lambda: Range(0, math.nan),
    lambda: Range(0, math.inf),
    lambda: Range(True, 3),
    lambda: Range("0", 1),
    lambda: Range(0, 1, "logarithmic"),
    lambda: Range(0.5, 1, min=0.6),
    lambda: Range(0, 1, max=0.5),
    lambda: Choice(()),
    lambda: Choice((1, 1)),
    lambda: Choice((True, False)),
    lambda: Choice((math.nan,)),
    lambda: Choice(([1, 2],)),
    lambda: dist_from_dict({"dist": "gauss", "low": 0, "high": 1}),
])
def test_invalid_distributions_are_refused(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("dist, value, inside", [
    (Range(0.0, 0.5), 0.0, True),
    (Range(0.0, 0.5), 0.5, True),
    (Range(0.0, 0.5), 0.51, False),
    (Range(0.0, 0.5), True, False),
    (Range(0.0, 0.5), "0.1", False),
    (Range(1, 10, integer=True), 3, True),
    (Range(1, 10, integer=True), 3.0, True),
    (Range(1, 10, integer=True), 3.5, False),
    (Choice(("sgd", "adam")), "adam", True),
    (Choice(("sgd", "adam")), "adamw", False),
    (Choice((0.5, 0.9)), 0.9, True),
    (Choice((0, 1)), False, False),
])
def test_contains(dist, value, inside):
    assert dist.contains(value) is inside


def _one_at_a_time(dist: Range, rng: np.random.Generator) -> float | int:
    """The sampling formula before block draws: NumPy's own ``uniform``, one value a call."""
    if dist.integer:
        x = 10 ** rng.uniform(math.log10(dist.low - 0.5), math.log10(dist.high + 0.5))
        return int(min(max(round(x), dist.low), dist.high))
    if dist.scale == "log":
        return float(min(max(10 ** rng.uniform(math.log10(dist.low), math.log10(dist.high)),
                              dist.low), dist.high))
    return float(min(max(rng.uniform(dist.low, dist.high), dist.low), dist.high))


@pytest.mark.parametrize("n", [1, 2_047, 2_049, 5_000])
def test_block_draws_give_exactly_the_one_at_a_time_values(n: int) -> None:
    """A space of ranges is drawn a block of configurations at a time (a million-trial
    launch); every value equals, bit for bit, the one drawn one call at a time, so sweeps
    launched before keep their trials (``hpsweep resume`` re-samples an unfinished launch)."""
    space = {"lr": Range(1e-6, 1e-1, "log"), "reg": Range(1e-5, 1e-1, "log"),
             "dropout": Range(0.0, 0.5), "hidden_size": Range(16, 512, "log", integer=True)}
    rng = np.random.default_rng([11, 2])
    before = [{k: _one_at_a_time(space[k], rng) for k in sorted(space)} for _ in range(n)]
    got = sample_configs(space, n, np.random.default_rng([11, 2]))
    assert got == before
    assert all(type(c["hidden_size"]) is int and type(c["lr"]) is float for c in got)
    assert list(got[0]) == list(space)  # the space's own key order
