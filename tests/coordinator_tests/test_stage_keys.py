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
