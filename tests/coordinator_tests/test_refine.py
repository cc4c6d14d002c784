"""Refinement and boundary flags: pure functions over a table of cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.config import StageConfig
from coordinator.evidence import Point, chance_threshold, edge_side, is_at_chance, spearman
from coordinator.rank import TrialOutcome, rank, scored_trials
from coordinator.refine import (
    CHANCE_DECADES,
    EXTEND,
    MIN_DECADES,
    MIN_RELATIVE,
    MIN_WIDTH,
    BoundaryFlag,
    Travel,
    _unscaled_range,
    boundary_flags,
    flag_message,
    format_value,
    refine,
    travel_of,
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
#
# The flag rule reads a whole stage: synthetic score surfaces over sampled values.


def surface(dist: Range, xs, score, name="learning_rate"):
    """Trials at normalised positions ``xs`` of ``dist`` scored by ``score(x)`` (None:
    diverged), best first, as ``boundary_flags`` takes them."""
    lo, hi = (lg(dist.low), lg(dist.high)) if dist.scale == "log" else (dist.low, dist.high)
    trials = []
    for x in xs:
        v = lo + x * (hi - lo)
        value = 10 ** v if dist.scale == "log" else v
        if dist.integer:
            value = round(value)
        trials.append(({name: value}, score(x)))
    scored = sorted((t for t in trials if t[1] is not None), key=lambda t: -t[1])
    return scored + [t for t in trials if t[1] is None]


def side_of(dist, xs, score, name="learning_rate", edge=0.1):
    flags = boundary_flags({name: dist}, surface(dist, xs, score, name), edge)
    assert len(flags) <= 1
    return flags[0].side if flags else None


def uniform_xs(seed, n=12):
    return list(np.random.default_rng(seed).uniform(size=n))


LR = Range(1e-9, 1e-6, "log")

# (id, normalised xs, score(x), expected side)
SURFACES = [
    ("rising", [0.05, 0.2, 0.3, 0.5, 0.55, 0.6, 0.7, 0.78, 0.8, 0.1, 0.4, 0.65], lambda x: x,
     "high"),
    # the old rule missed it: the best (0.8) is nowhere near the top 10 % of the range
    ("rising-empty-edge-zone", [0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.15, 0.35, 0.45],
     lambda x: x, "high"),
    ("falling", [0.15, 0.2, 0.3, 0.5, 0.55, 0.6, 0.7, 0.78, 0.95, 0.1, 0.4, 0.65], lambda x: -x,
     "low"),
    ("rising-noisy-runner-up-best", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.25,
                                     0.55], lambda x: x + (0.2 if x == 0.85 else 0.0), "high"),
    ("interior-peak", [0.05, 0.15, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.85, 0.95, 0.99],
     lambda x: -(x - 0.5) ** 2, None),
    ("peak-then-divergence", [0.05, 0.15, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.85, 0.95, 0.99],
     lambda x: None if x > 0.8 else -(x - 0.6) ** 2, None),
    # the old rule flagged it: the best lies in the edge zone, but nothing trends there
    ("flat-best-at-edge", [0.95, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.15, 0.35, 0.45],
     lambda x: 1.0 if x == 0.95 else [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5][
         [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.15, 0.35, 0.45].index(x)] * -0.1, None),
    ("all-equal", [0.1, 0.3, 0.5, 0.7, 0.9], lambda x: 0.5, None),
    ("diverging-above-the-best", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
     lambda x: None if x > 0.15 else 1.0, "low"),
    ("every-trial-diverged", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], lambda x: None, "low"),
    ("too-few-for-a-trend-edge-zone", [0.1, 0.95, 0.5], lambda x: x, "high"),
    ("too-few-for-a-trend-interior", [0.1, 0.85, 0.5], lambda x: x, None),
]


@pytest.mark.parametrize("xs, score, side", [c[1:] for c in SURFACES],
                         ids=[c[0] for c in SURFACES])
def test_flag_rule_on_score_surfaces(xs, score, side):
    assert side_of(LR, xs, score) == side


def test_every_trial_diverged_flags_only_the_learning_rate():
    space = {"learning_rate": LR, "reg": Range(1e-6, 1e-1, "log")}
    trials = [({"learning_rate": 10 ** -(6 + i / 4), "reg": 10 ** -(1 + i / 3)}, None)
              for i in range(8)]
    [flag] = boundary_flags(space, trials)
    assert (flag.param, flag.side, flag.reason) == ("learning_rate", "low", "diverged")
    assert flag.value == min(t[0]["learning_rate"] for t in trials)
    assert "every trial diverged in [1e-09, 1e-06]" in flag_message(flag)


@pytest.mark.parametrize("seed", range(20))
def test_monotone_surfaces_are_flagged_whatever_the_draw(seed):
    """The issue's case: 12 trials, the score rising with the rate. The old edge-zone rule
    fired only when the largest draw landed in the top 10 % (2 of 8 seeds missed)."""
    xs = uniform_xs(seed)
    noise = np.random.default_rng(100 + seed).normal(0, 0.02, size=len(xs))
    bumpy = dict(zip(xs, noise, strict=True))
    assert side_of(LR, xs, lambda x: x + bumpy[x]) == "high"
    assert side_of(LR, xs, lambda x: -x - bumpy[x]) == "low"


def test_false_alarms_are_rare_on_interior_optima_and_flat_parameters():
    """12 trials: a flat parameter raises a flag only when its noise looks like a trend
    (the old rule: whenever the best fell in either edge zone, ~20 %). A peak in the
    middle is flagged only when the draws happen to miss one side of it."""
    peaked = flat = 0
    for seed in range(400):
        xs = uniform_xs(seed)
        rng = np.random.default_rng(1000 + seed)
        noise = dict(zip(xs, rng.normal(0, 0.02, size=len(xs)), strict=True))
        peaked += side_of(LR, xs, lambda x, e=noise: -(x - 0.5) ** 2 + e[x]) is not None
        flat += side_of(LR, xs, lambda x, e=noise: e[x]) is not None
    assert peaked / 400 <= 0.08
    assert flat / 400 <= 0.08


def test_carried_trials_outside_the_range_are_not_evidence():
    """A carried trial (from an older, wider range) is the stage's best but lies below the
    range: it must not make the range look flagged at its low edge."""
    dist = Range(2.15e-3, 1.42e-1, "log")
    own = surface(dist, [0.1, 0.3, 0.45, 0.5, 0.55, 0.7, 0.9], lambda x: -(x - 0.5) ** 2)
    carried = ({"learning_rate": 1.82e-4}, 10.0)
    assert boundary_flags({"learning_rate": dist}, [carried, *own]) == []


@pytest.mark.parametrize("param, dist, side, at_limit, value", [
    ("dropout", Range(0.0, 0.5), "low", True, 0.0),
    ("dropout", Range(0.0, 0.5), "high", False, 0.5),
    ("dropout", Range(0.9, 0.999), "high", True, 0.999),
    ("hidden_size", Range(16, 512, "log", integer=True), "low", False, 16),
    ("depth", Range(1, 8, "log", integer=True), "low", True, 1),
    ("batch_size", Range(1, 64, integer=True), "low", True, 1),
    ("reg", Range(1e-4, 1e-1, "log", max=1e-1), "high", True, 0.1),
    ("reg", Range(1e-4, 1e-1, "log", min=1e-6), "low", False, 1e-4),
], ids=["dropout-0", "dropout-room", "dropout-open-1", "int-log-room", "depth-1", "int-1",
        "user-max", "user-min-below"])
def test_flags_know_hard_limits_and_keep_integers(param, dist, side, at_limit, value):
    xs = [0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0]
    score = (lambda x: x) if side == "high" else (lambda x: -x)
    [flag] = boundary_flags({param: dist}, surface(dist, xs, score, param))
    assert (flag.param, flag.side, flag.at_limit, flag.reason) == (param, side, at_limit, "trend")
    assert (flag.low, flag.high) == (dist.low, dist.high)
    assert flag.value == pytest.approx(value)
    if dist.integer:
        assert type(flag.value) is int


def test_spearman_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) == 0.0
    assert 0 < spearman([1, 2, 3, 4], [1, 1, 2, 2]) < 1


def test_edge_side_needs_a_best():
    assert edge_side([Point(0.9, -1.0, True)], None, 0.1) is None
    assert edge_side([], 0, 0.1) is None


def test_scored_trials_give_ties_one_utility_and_diverged_none():
    ranked = rank([TrialOutcome(1, "done", 0.5, 2.0, {"a": 1}),
                   TrialOutcome(2, "done", 0.5, 2.0, {"a": 2}),
                   TrialOutcome(3, "done", 0.9, 1.0, {"a": 3}),
                   TrialOutcome(4, "diverged", None, None, {"a": 4}),
                   TrialOutcome(5, "failed", None, None, {"a": 5})])
    got = scored_trials(ranked)
    assert [p["a"] for p, _ in got] == [3, 1, 2, 4]
    assert [u for _, u in got] == [3.0, 1.5, 1.5, None]


# ---------------------------------------------------------------------------- travel


def test_travel_counts_the_stages_in_a_row_that_flagged_the_same_side():
    flags = [BoundaryFlag("learning_rate", 1e-7, 1e-9, 1e-7, "high", False, "log"),
             BoundaryFlag("dropout", 0.0, 0.0, 0.5, "low", True)]
    history = [(0, "learning_rate", "high"), (1, "learning_rate", "high"),
               (0, "reg", "low"), (2, "reg", "low")]
    t = travel_of(flags, history, 2)
    assert dict(t.sides) == {"learning_rate": frozenset({"high"})}  # at a limit: no travel
    assert t.repeats == {("learning_rate", "high"): 2}
    assert travel_of(flags, history[:1], 2).repeats == {("learning_rate", "high"): 0}


@pytest.mark.parametrize("repeats", [0, 1, 3])
def test_a_repeated_flag_pushes_twice_as_far_each_time(repeats):
    dist = Range(1e-4, 1e-2, "log")
    travel = Travel({"learning_rate": frozenset({"high"})},
                    {("learning_rate", "high"): repeats})
    new = refine({"learning_rate": dist}, [{"learning_rate": 9e-3}], {"learning_rate": 9e-3},
                 STAGE, travel)["learning_rate"]
    push = EXTEND * 2 if repeats == 0 else max(2, CHANCE_DECADES) * 2**repeats
    assert lg(new.high) == pytest.approx(-2 + push)


def test_unflagged_sides_do_not_move_even_with_the_best_at_the_edge():
    dist = Range(1e-4, 1e-2, "log")
    new = refine({"learning_rate": dist}, [{"learning_rate": 9.9e-3}],
                 {"learning_rate": 9.9e-3}, STAGE, Travel())["learning_rate"]
    assert new.high == 1e-2


def test_at_chance_a_flagged_range_moves_past_its_edge_and_others_stay():
    space = {"learning_rate": Range(1e-9, 1e-7, "log"), "reg": Range(1e-6, 1e-1, "log"),
             "momentum": Choice((0.5, 0.9))}
    kept = [{"learning_rate": 9e-8, "reg": 1e-3, "momentum": 0.9}] * 2
    travel = Travel({"learning_rate": frozenset({"high"})}, {}, at_chance=True)
    new = refine(space, kept, kept[0], STAGE, travel)
    lr = new["learning_rate"]
    assert lg(lr.low) == pytest.approx(-7 - STAGE.margin * 2)
    assert lg(lr.high) == pytest.approx(-7 + CHANCE_DECADES)
    assert new["reg"] == space["reg"] and new["momentum"] == space["momentum"]
    # flagged again at chance: twice as far
    again = refine({"learning_rate": lr}, kept, kept[0], STAGE,
                   Travel({"learning_rate": frozenset({"high"})},
                          {("learning_rate", "high"): 1}, at_chance=True))["learning_rate"]
    assert lg(again.high) == pytest.approx(lg(lr.high) + 2 * max(CHANCE_DECADES, width(lr)))


def test_at_chance_with_every_trial_diverged_the_rate_moves_down():
    space = {"learning_rate": Range(1e1, 1e3, "log")}
    travel = Travel({"learning_rate": frozenset({"low"})}, {}, at_chance=True)
    lr = refine(space, [], {}, STAGE, travel)["learning_rate"]
    assert lg(lr.low) == pytest.approx(1 - CHANCE_DECADES)
    assert lg(lr.high) == pytest.approx(1 + STAGE.margin * 2)


def test_three_stages_at_chance_reach_a_useful_rate_six_decades_up():
    """The issue's 1e-9..1e-7 sweep on a synthetic surface: chance below 1e-2, then a bowl
    around 0.3 with divergence above 3. Two refinements must put 0.3 well inside."""
    space = {"learning_rate": Range(1e-9, 1e-7, "log")}
    history: list[tuple[int, str, str]] = []
    rng = np.random.default_rng(0)
    for idx in range(2):
        lr_dist = space["learning_rate"]
        values = [lr_dist.sample(rng) for _ in range(20)]
        trials = [({"learning_rate": v}, None if v > 3 else
                   (0.1 + 1e-3 * lg(v) if v < 1e-2 else 1 - (lg(v) - lg(0.3)) ** 2))
                  for v in values]
        trials = sorted((t for t in trials if t[1] is not None), key=lambda t: -t[1]) + [
            t for t in trials if t[1] is None]
        flags = boundary_flags(space, trials)
        at_chance = all(u is None or u < 0.2 for _, u in trials)
        travel = travel_of(flags, history, idx, at_chance)
        history += [(idx, f.param, f.side) for f in flags]
        kept = [p for p, _ in trials[:3]]
        space = refine(space, kept, kept[0], STAGE, travel)
    lr = space["learning_rate"]
    assert lr.low < 0.05 and lr.high > 2


def test_chance_threshold_and_at_chance():
    assert chance_threshold(10, 252) == pytest.approx(0.1 + 3 * math.sqrt(0.09 / 252))
    assert is_at_chance(None, 10, 252) and is_at_chance(0.135, 10, 252)
    assert not is_at_chance(0.2, 10, 252)


# ---------------------------------------------------------------------------- messages


def flag(**kw):
    base = {"param": "learning_rate", "value": 3.9e-7, "low": 1e-9, "high": 1e-6,
            "side": "high", "at_limit": False, "scale": "log", "limit": "", "reason": "trend"}
    return BoundaryFlag(**{**base, **kw})


@pytest.mark.parametrize("f, action, message", [
    (flag(), "", "learning_rate: scores rise towards the high edge of [1e-09, 1e-06] "
     "(best 3.9e-07) — the optimum may lie above; widen the range"),
    (flag(), "stage 1 extends it to [9e-09, 1e-03]", "learning_rate: scores rise towards the "
     "high edge of [1e-09, 1e-06] (best 3.9e-07) — the optimum may lie above; stage 1 extends "
     "it to [9e-09, 1e-03]"),
    (flag(reason="edge", value=9.3e-2, low=1e-6, high=1e-1), "",
     "learning_rate: best 9.3e-02 is at the high edge of [1e-06, 1e-01] — the optimum may lie "
     "above; widen the range"),
    (flag(param="dropout", value=0.001, low=0.0, high=0.5, side="low", at_limit=True,
          scale="linear", limit=">= 0", reason="edge"), "",
     "dropout: best 0.001 is at the low edge of [0, 0.5], which is its hard limit (>= 0)"),
    (flag(param="reg", value=0.099, low=3.16e-5, high=0.1, at_limit=True,
          limit="<= 0.1, the config's max"), "",
     "reg: scores rise towards the high edge of [3.16e-05, 1e-01] (best 9.9e-02), which is "
     "its hard limit (<= 0.1, the config's max)"),
    # rebuilt from a row: floats for an integer parameter still print as integers
    (flag(param="hidden_size", value=211.0, low=16.0, high=512.0, side="low"), "",
     "hidden_size: scores rise towards the low edge of [16, 512] (best 211) — the optimum "
     "may lie below; widen the range"),
    (flag(param="dropout", value=0.998, low=0.9, high=0.999, at_limit=True, scale="linear",
          limit="< 1", reason=""), "",
     "dropout: best 0.998 is at the high edge of [0.9, 0.999], which is its hard limit (< 1)"),
    (BoundaryFlag("x", 1.0, 1.0, 2.0, "low", True), "", "x: best 1 is at the low edge of "
     "[1, 2], which is its hard limit"),
    (BoundaryFlag("dropout", 0.001, 0.0, 0.5, "low", True), "", "dropout: best 0.001 is at the "
     "low edge of [0, 0.5], which is its hard limit (>= 0)"),
    (BoundaryFlag("depth", 1, 1, 8, "low", True), "", "depth: best 1 is at the low edge of "
     "[1, 8], which is its hard limit"),
], ids=["widen", "derived-extended", "edge", "hard-limit", "user-max", "integer-row",
        "open-limit", "bare", "row-spec-limit", "row-not-on-spec-limit"])
def test_flag_messages(f, action, message):
    assert flag_message(f, action) == message


def test_integers_print_as_integers():
    assert format_value("hidden_size", 211.00000000000003, "log") == "211"
    assert format_value("batch_size", 64.0) == "64"
    assert format_value("learning_rate", 3.16e-5, "log") == "3.16e-05"
    assert format_value("dropout", 0.25) == "0.25"


# ---------------------------------------------------------------------------- issue 4


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
