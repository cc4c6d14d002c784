"""The stage defaults chosen by benchmarks/search.py, and the default carry's clamp."""

from __future__ import annotations

import pytest

from coordinator.config import ConfigError, StageConfig, parse_config

BASE = {"name": "d", "dataset": "spiral", "space": {
    "learning_rate": {"dist": "log_uniform", "low": 1e-3, "high": 1.0}}}


def test_defaults() -> None:
    stage = StageConfig(trials=20, epochs=5)
    assert (stage.keep, stage.margin, stage.carry, stage.edge, stage.quorum) == (
        0.15, 0.05, 2, 0.1, 0.8)


def test_the_default_carry_never_exceeds_the_stages() -> None:
    cfg = parse_config({**BASE, "stages": [{"trials": 1, "epochs": 1}, {"trials": 5, "epochs": 2},
                                           {"trials": 1, "epochs": 4}, {"trials": 1, "epochs": 8}]})
    assert [s.carry for s in cfg.stages] == [1, 1, 1, 2]  # the last stage carries nothing
    assert parse_config(cfg.to_dict()) == cfg


def test_an_explicit_carry_is_still_checked() -> None:
    with pytest.raises(ConfigError, match=r"stages\[0\]\.carry: must be <= stages\[1\]\.trials"):
        parse_config({**BASE, "stages": [{"trials": 4, "epochs": 1, "carry": 2},
                                         {"trials": 1, "epochs": 2}]})
