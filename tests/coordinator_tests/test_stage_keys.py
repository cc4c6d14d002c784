"""Issue 12 item 6: mistakes in stage and training keys caught before anything is written."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from coordinator.cli import main
from tests.support.configs import write_config

TRAIN = {"depth": 1, "hidden_size": 16, "update_rule": "sgd"}


def launch(tmp_path, **overrides):  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path / "c.yaml", **overrides)
    db = tmp_path / "x.db"
    # an unreachable Redis: a launch that got past validation would fail with exit 1
    res = CliRunner().invoke(main, ["launch", str(cfg), "--db", f"sqlite:///{db}",
                                    "--redis", "redis://127.0.0.1:1/0"],
                             catch_exceptions=False)
    return res, db


def test_step_schedule_without_every_exits_2(tmp_path):  # type: ignore[no-untyped-def]
    res, db = launch(tmp_path, train={**TRAIN, "schedule": {"kind": "step", "factor": 0.5}})
    assert res.exit_code == 2, res.output
    assert "train.schedule.every: required for kind step" in res.output
    assert not db.exists()


@pytest.mark.parametrize("train, space, key", [
    ({**TRAIN, "batch_size": 5000}, {}, "train.batch_size: 5000 is larger than the"),
    (TRAIN, {"batch_size": {"dist": "int_uniform", "low": 16, "high": 4096}},
     "space.batch_size: 4096 is larger than the"),
    (TRAIN, {"batch_size": {"dist": "choice", "values": [32, 8192]}},
     "space.batch_size: 8192 is larger than the"),
])
def test_batch_size_larger_than_the_training_rows_exits_2(tmp_path, train, space, key):  # type: ignore[no-untyped-def]
    full_space = {"learning_rate": {"dist": "log_uniform", "low": 1e-3, "high": 1.0}, **space}
    res, db = launch(tmp_path, train=train, space=full_space)
    assert res.exit_code == 2, res.output
    assert key in res.output and "training rows of 'spiral'" in res.output
    assert not db.exists()


def test_a_batch_as_large_as_the_training_rows_is_fine(tmp_path):  # type: ignore[no-untyped-def]
    res, _ = launch(tmp_path, train={**TRAIN, "batch_size": 64,
                                     "schedule": {"kind": "step", "every": 2}})
    assert res.exit_code != 2, res.output


def test_bad_prune_keys_exit_2_with_their_paths(tmp_path):  # type: ignore[no-untyped-def]
    res, db = launch(tmp_path, stages=[
        {"trials": 6, "epochs": 1},
        {"trials": 4, "epochs": 3, "prune": {"rule": "mean", "after": 0, "eta": 1, "every": 2}},
        {"trials": 2, "epochs": 3, "prune": {"after": 3}}])
    assert res.exit_code == 2, res.output
    for line in ("stages[1].prune.rule: unknown rule 'mean'; expected one of median, halving",
                 "stages[1].prune.after: expected an integer >= 1, got 0",
                 "stages[1].prune.eta: expected an integer >= 2, got 1",
                 "stages[1].prune.every: unknown key; expected one of rule, after, "
                 "min_trials, eta",
                 "stages[2].prune.after: must be below the stage's epochs (3)"):
        assert line in res.output
    assert not db.exists()


def test_a_valid_prune_key_passes(tmp_path):  # type: ignore[no-untyped-def]
    res, _ = launch(tmp_path, stages=[{"trials": 6, "epochs": 1},
                                      {"trials": 4, "epochs": 3, "prune": {"after": 1}}])
    assert res.exit_code != 2, res.output
