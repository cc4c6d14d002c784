"""Refinement and boundary flags: pure functions over a table of cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.config import StageConfig
from coordinator.refine import (
    MIN_DECADES,
    MIN_RELATIVE,
    MIN_WIDTH,
    BoundaryFlag,
    _unscaled_range,
    boundary_flags,
    flag_message,
    refine,
)
from coordinator.space import Choice, Range

STAGE = StageConfig(trials=20, epochs=1, keep=0.25, margin=0.1, edge=0.1)


def lg(x: float) -> float:
    return math.log10(x)


def width(r: Range) -> float:
    return lg(r.high) - lg(r.low) if r.scale == "log" else r.high - r.low


def refined(name, dist, kept, best, **stage):
    stage_cfg = StageConfig(trials=20, epochs=1, **{"margin": 0.1, "edge": 0.1, **stage})
    return refine({name: dist}, [{name: v} for v in kept], {name: best}, stage_cfg)[name]


# (id, param, current range, kept values, best, expected (low, high) of the next range)
EXACT = [
    ("interior-log-narrows", "learning_rate", Range(1e-6, 1e-1, "log"), [1e-3, 3e-3, 2e-4], 1e-3,
     (10 ** (lg(2e-4) - 0.5), 10 ** (lg(3e-3) + 0.5))),
    ("interior-linear-narrows", "dropout", Range(0.0, 0.5), [0.2, 0.3, 0.25], 0.25,
     (0.15, 0.35)),
    ("margin-clipped-to-range", "dropout", Range(0.0, 0.5), [0.12, 0.3], 0.3, (0.07, 0.35)),
    ("high-edge-log-extends", "learning_rate", Range(1e-9, 1e-6, "log"), [9e-7, 5e-7], 9e-7,
     (10 ** (lg(5e-7) - 0.3), 10 ** (-6 + 1.5))),
    ("low-edge-log-extends", "reg", Range(1e-5, 1e1, "log"), [2e-5, 1e-4], 2e-5,
     (1e-8, 10 ** (lg(1e-4) + 0.6))),
    ("high-edge-linear-extends", "weight_scale", Range(0.0, 0.1), [0.099, 0.06], 0.099,
     (0.05, 0.15)),
    ("low-edge-linear-extends", "momentum", Range(0.5, 0.9), [0.51, 0.6], 0.51, (0.3, 0.64)),
    ("low-edge-at-hard-limit-0", "dropout", Range(0.0, 0.5), [0.001, 0.1], 0.001, (0.0, 0.15)),
    ("int-narrows", "batch_size", Range(16, 256, integer=True), [100, 120], 110, (76, 144)),
    ("int-low-edge-stops-at-1", "batch_size", Range(2, 12, integer=True), [2, 5], 2, (1, 6)),
    ("int-log-high-edge", "hidden_size", Range(16, 512, "log", integer=True), [500, 300], 500,
     (math.floor(10 ** (lg(300) - 0.1 * lg(32))), math.ceil(10 ** (lg(512) + 0.5 * lg(32))))),
    ("int-log-depth-stays-at-1", "depth", Range(1, 8, "log", integer=True), [1, 2], 1,
     (1, math.ceil(10 ** (lg(2) + 0.1 * lg(8))))),
    ("int-log-at-1", "hidden_size", Range(1, 100, "log", integer=True), [1, 3], 1,
     (1, math.ceil(10 ** (lg(3) + 0.2)))),
    ("user-max-not-crossed", "learning_rate", Range(1e-4, 1e-2, "log", max=1e-2), [9e-3, 5e-3],
     9e-3, (10 ** (lg(5e-3) - 0.2), 1e-2)),
    ("user-min-not-crossed", "reg", Range(1e-3, 1.0, "log", min=1e-3), [1.1e-3, 4e-3], 1.1e-3,
     (1e-3, 10 ** (lg(4e-3) + 0.3))),
    ("user-max-above-range", "learning_rate", Range(1e-4, 1e-2, "log", max=3e-2), [9e-3], 9e-3,
     (10 ** (lg(9e-3) - 0.2), 3e-2)),
]


@pytest.mark.parametrize("param, dist, kept, best, expected", [c[1:] for c in EXACT],
                         ids=[c[0] for c in EXACT])
def test_next_range(param, dist, kept, best, expected):
    new = refined(param, dist, kept, best)
    assert (new.scale, new.integer, new.min, new.max) == (dist.scale, dist.integer, dist.min,
                                                          dist.max)
    assert new.low == pytest.approx(expected[0], rel=1e-9)
    assert new.high == pytest.approx(expected[1], rel=1e-9)
    if dist.integer:
        assert type(new.low) is int and type(new.high) is int


@pytest.mark.parametrize("param, dist, best", [
    ("dropout", Range(0.2, 0.9), 0.89),
    ("dropout", Range(0.9, 0.999), 0.998),
    ("momentum", Range(0.5, 0.99), 0.985),
    ("beta2", Range(0.99, 0.99999, "log"), 0.99998),
    ("schedule_factor", Range(0.1, 1.0), 0.95),
], ids=["dropout", "dropout-near-1", "momentum", "beta2-log", "closed-at-1"])
def test_high_edge_never_reaches_a_limit_at_1(param, dist, best):
    new = refined(param, dist, [best, dist.low + 0.5 * (dist.high - dist.low)], best)
    assert new.high >= dist.high * (1 - 1e-12)
    if param == "schedule_factor":  # closed limit: may reach it
        assert new.high == 1.0
    else:  # open limit: stays inside by a real margin, not by one float ulp
        assert new.high <= 1.0 - 1e-6


def test_log_ranges_can_widen_down_forever_and_never_reach_0():
    r = Range(1e-6, 1e-1, "log")
    for _ in range(40):  # each round: best at the low edge, pushed down by half the width
        r = refined("learning_rate", r, [r.low, r.high], r.low)
        assert 0 < r.low < r.high == 1e-1
    assert r.low < 1e-300


def test_many_stages_in_a_row_cannot_shrink_a_range_to_nothing():
    log, linear = Range(1e-6, 1e-1, "log"), Range(100.0, 200.0)
    for _ in range(100):
        log = refined("learning_rate", log, [1e-3], 1e-3, margin=0.0)
        linear = refined("weight_scale", linear, [150.0], 150.0, margin=0.0)
    assert width(log) == pytest.approx(MIN_DECADES)
    assert width(linear) == pytest.approx(MIN_RELATIVE * 150, rel=0.01)
    assert log.contains(1e-3) and linear.contains(150.0)


@pytest.mark.parametrize("dist, kept", [
    (Range(0.0, 0.5), [0.25]),
    (Range(1e-6, 1e-1, "log"), [1e-3]),
    (Range(0.0, 0.5), [0.0]),
])
def test_range_never_collapses(dist, kept):
    new = refined("dropout" if dist.scale == "linear" else "learning_rate", dist, kept, kept[0],
                  margin=0.0)
    assert width(new) == pytest.approx(MIN_WIDTH * width(dist))
    assert new.low <= kept[0] <= new.high


@pytest.mark.parametrize("dist, value", [
    (Range(1, 100, integer=True), 50),
    (Range(1, 2, integer=True), 1),
    (Range(1, 2, integer=True), 2),
    (Range(16, 512, "log", integer=True), 64),
])
def test_integer_ranges_keep_at_least_two_values(dist, value):
    new = refined("batch_size", dist, [value], value, margin=0.0, edge=0.0)
    assert type(new.low) is int and type(new.high) is int
    assert new.low < new.high and new.low >= 1
    assert new.low <= value <= new.high


def test_an_edge_that_does_not_move_keeps_its_exact_value():
    # 10 ** log10(0.07) is 0.07000000000000002: a kept edge must not drift like that
    new = refined("learning_rate", Range(3e-4, 7e-2, "log"), [3.1e-4, 6.9e-2], 1e-3)
    assert (new.low, new.high) == (3e-4, 7e-2)


def test_rounding_to_integers_never_yields_a_single_value():
    # lo == hi in scale space cannot come out of refine (MIN_WIDTH); the guard still holds
    for dist, x, expected in [(Range(1, 100, integer=True), 50.0, (50, 51)),
                              (Range(1, 100, integer=True, max=100), 100.0, (99, 100)),
                              (Range(1, 512, "log", integer=True), lg(64), (64, 65)),
                              (Range(1, 512, "log", integer=True), 0.0, (1, 2))]:
        new = _unscaled_range("hidden_size", dist, x, x)
        assert (new.low, new.high) == expected


def test_values_outside_the_current_range_do_not_break_it():
    # a carried trial's value from an older, wider range
    new = refined("dropout", Range(0.1, 0.3), [0.9, 0.2], 0.2)
    assert 0.1 <= new.low < new.high <= 0.3


def test_refined_ranges_always_respect_limits_randomised():
    rng = np.random.default_rng(0)
    dists = [("dropout", Range(0.0, 0.5)), ("learning_rate", Range(1e-6, 1e-1, "log")),
             ("hidden_size", Range(16, 512, "log", integer=True)),
             ("batch_size", Range(1, 64, integer=True)), ("momentum", Range(0.5, 0.99)),
             ("reg", Range(1e-5, 1e-1, "log", min=1e-6, max=1.0))]
    for name, dist in dists:
        for _ in range(60):
            kept = [dist.sample(rng) for _ in range(int(rng.integers(1, 5)))]
            stage = {"margin": float(rng.uniform(0, 1)), "edge": float(rng.uniform(0, 0.49))}
            new = refined(name, dist, kept, kept[0], **stage)
            assert new.low < new.high and new.contains(kept[0])
            assert name != "dropout" or (new.low >= 0 and new.high < 1)
            assert name != "momentum" or new.high < 1
            assert not dist.integer or new.low >= 1
            assert name != "reg" or (new.low >= 1e-6 and new.high <= 1.0)
            dist = new  # keep refining the refined range


# (id, current choice, kept values, best, expected values)
CHOICES = [
    ("prunes-in-order", Choice((0.5, 0.9, 0.95, 0.99)), [0.99, 0.5, 0.99], 0.99, (0.5, 0.99)),
    ("keeps-the-best", Choice(("sgd", "adam", "nesterov")), ["adam"], "nesterov",
     ("adam", "nesterov")),
    ("db-floats-match-ints", Choice((32, 64, 128)), [64.0, 128.0], 64.0, (64, 128)),
    ("unknown-values-ignored", Choice(("sgd", "adam")), ["adamw", "sgd"], "sgd", ("sgd",)),
    ("nothing-known-unchanged", Choice(("sgd", "adam")), ["adamw"], "adamw", ("sgd", "adam")),
]


@pytest.mark.parametrize("dist, kept, best, expected", [c[1:] for c in CHOICES],
                         ids=[c[0] for c in CHOICES])
def test_categorical_pruning(dist, kept, best, expected):
    assert refine({"p": dist}, [{"p": v} for v in kept], {"p": best}, STAGE)["p"].values == expected


def test_no_kept_trials_or_no_values_leave_the_space_unchanged():
    space = {"learning_rate": Range(1e-6, 1e-1, "log"), "momentum": Choice((0.5, 0.9))}
    assert refine(space, [], {"learning_rate": 1e-3}, STAGE) == space
    assert refine(space, [{"reg": 1.0}], {}, STAGE) == space
    assert refine(space, [{"learning_rate": None, "momentum": None}], {}, STAGE) == space


def test_whole_space_is_refined_and_extra_params_ignored():
    space = {"learning_rate": Range(1e-6, 1e-1, "log"), "dropout": Range(0.0, 0.5),
             "update_rule": Choice(("sgd", "adam"))}
    best = {"learning_rate": 1e-3, "dropout": 0.25, "update_rule": "adam", "batch_size": 64,
            "hidden": [100]}
    new = refine(space, [best], best, STAGE)
    assert list(new) == list(space)
    assert new["update_rule"] == Choice(("adam",))
    assert width(new["learning_rate"]) < width(space["learning_rate"])


# ---------------------------------------------------------------------------- flags

# (id, param, range, best, edge, expected side or None, at_limit)
FLAGS = [
    ("log-high", "learning_rate", Range(1e-6, 1e-1, "log"), 9.3e-2, 0.1, "high", False),
    ("log-low", "learning_rate", Range(1e-6, 1e-1, "log"), 2e-6, 0.1, "low", False),
    ("log-interior-though-linearly-low", "learning_rate", Range(1e-6, 1e-1, "log"), 5e-3, 0.1,
     None, False),
    ("linear-interior", "dropout", Range(0.0, 0.5), 0.25, 0.1, None, False),
    ("linear-low-hard-limit", "dropout", Range(0.0, 0.5), 0.001, 0.1, "low", True),
    ("linear-high-room-below-1", "dropout", Range(0.0, 0.5), 0.48, 0.1, "high", False),
    ("linear-high-next-to-open-1", "dropout", Range(0.9, 0.999), 0.998, 0.1, "high", True),
    ("int-low-limit-1", "batch_size", Range(1, 64, integer=True), 1, 0.1, "low", True),
    ("int-log-low-room", "hidden_size", Range(16, 512, "log", integer=True), 16, 0.1, "low",
     False),
    ("int-log-depth-at-1", "depth", Range(1, 8, "log", integer=True), 1, 0.1, "low", True),
    ("user-max", "reg", Range(1e-4, 1e-1, "log", max=1e-1), 0.09, 0.1, "high", True),
    ("user-min-below-edge", "reg", Range(1e-4, 1e-1, "log", min=1e-6), 1.1e-4, 0.1, "low", False),
    ("wider-edge", "dropout", Range(0.0, 0.8), 0.6, 0.3, "high", False),
    ("default-edge-too-narrow", "dropout", Range(0.1, 0.5), 0.4, 0.1, None, False),
    ("outside-the-range", "learning_rate", Range(1e-6, 1e-3, "log"), 5e-2, 0.1, "high", False),
]


@pytest.mark.parametrize("param, dist, best, edge, side, at_limit", [c[1:] for c in FLAGS],
                         ids=[c[0] for c in FLAGS])
def test_boundary_flags(param, dist, best, edge, side, at_limit):
    flags = boundary_flags({param: dist, "update_rule": Choice(("sgd",))},
                           {param: best, "update_rule": "sgd"}, edge)
    if side is None:
        assert flags == []
        return
    [flag] = flags
    assert (flag.param, flag.value, flag.low, flag.high) == (param, best, dist.low, dist.high)
    assert (flag.side, flag.at_limit) == (side, at_limit)


def test_flags_match_refinement_extends_exactly_when_not_at_limit():
    for _, param, dist, best, edge, side, at_limit in FLAGS:
        if side is None or edge != 0.1:
            continue
        new = refined(param, dist, [best], best)
        moved = new.high > dist.high if side == "high" else new.low < dist.low
        assert moved is not at_limit, param


def test_default_edge_is_the_stage_default():
    space = {"dropout": Range(0.1, 0.5)}
    assert boundary_flags(space, {"dropout": 0.47}) != []
    assert boundary_flags(space, {"dropout": 0.45}) == []
    assert boundary_flags(space, {"dropout": 0.45}, edge=0.2) != []
    assert boundary_flags(space, {}) == [] and boundary_flags(space, {"dropout": None}) == []


@pytest.mark.parametrize("flag, message", [
    (boundary_flags({"learning_rate": Range(1e-6, 1e-1, "log")}, {"learning_rate": 9.3e-2})[0],
     "learning_rate: best 9.3e-02 is at the high edge of [1e-06, 1e-01] — the optimum may lie "
     "above; widen the range"),
    (boundary_flags({"dropout": Range(0.0, 0.5)}, {"dropout": 0.001})[0],
     "dropout: best 0.001 is at the low edge of [0, 0.5], which is its hard limit (>= 0)"),
    (boundary_flags({"reg": Range(3.16e-5, 1e-1, "log", max=0.1)}, {"reg": 0.099})[0],
     "reg: best 9.9e-02 is at the high edge of [3.16e-05, 1e-01], which is its hard limit "
     "(<= 0.1, the config's max)"),
    (boundary_flags({"hidden_size": Range(16, 512, "log", integer=True)}, {"hidden_size": 16})[0],
     "hidden_size: best 16 is at the low edge of [16, 512] — the optimum may lie below; widen "
     "the range"),
    (boundary_flags({"dropout": Range(0.9, 0.999)}, {"dropout": 0.998})[0],
     "dropout: best 0.998 is at the high edge of [0.9, 0.999], which is its hard limit (< 1)"),
    (BoundaryFlag("x", 1.0, 1.0, 2.0, "low", True), "x: best 1 is at the low edge of [1, 2], "
     "which is its hard limit"),
    # rebuilt from a boundary_flags row, without scale or limit
    (BoundaryFlag("dropout", 0.001, 0.0, 0.5, "low", True), "dropout: best 0.001 is at the low "
     "edge of [0, 0.5], which is its hard limit (>= 0)"),
    (BoundaryFlag("depth", 1, 1, 8, "low", True), "depth: best 1 is at the low edge of [1, 8], "
     "which is its hard limit"),
], ids=["widen", "hard-limit", "user-max", "integer", "open-limit", "bare", "row-spec-limit",
        "row-not-on-spec-limit"])
def test_flag_messages(flag, message):
    assert flag_message(flag) == message


# ---------------------------------------------------------------------------- issue 4


def test_issue4_learning_rate_range_far_too_low_is_flagged_and_widened():
    space = {"learning_rate": Range(1e-9, 1e-6, "log")}
    kept = [{"learning_rate": v} for v in (9e-7, 7e-7, 4e-7, 8e-7, 6e-7)]
    best = kept[0]
    [flag] = boundary_flags(space, best, STAGE.edge)
    assert (flag.param, flag.side, flag.at_limit) == ("learning_rate", "high", False)
    assert "the optimum may lie above; widen the range" in flag_message(flag)
    assert refine(space, kept, best, STAGE)["learning_rate"].high > 1e-6


def test_issue4_wide_range_with_interior_best_narrows_stage_after_stage():
    space = {"learning_rate": Range(1e-4, 1e0, "log"), "reg": Range(1e-6, 1e2, "log")}
    rng = np.random.default_rng(0)
    widths = [width(space["learning_rate"])]
    for _ in range(2):
        # a bowl around lr 1e-2: the kept trials are the ones closest to it in log space
        trials = [{name: d.sample(rng) for name, d in space.items()} for _ in range(60)]
        trials.sort(key=lambda t: abs(lg(t["learning_rate"]) + 2))
        space = refine(space, trials[:15], trials[0], STAGE)
        widths.append(width(space["learning_rate"]))
    assert widths[0] > widths[1] > widths[2]
    assert space["learning_rate"].contains(1e-2)
