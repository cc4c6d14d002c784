"""``model:`` in a sweep config: a registered name, hyperparameters its constructor takes."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from coordinator.cli import main
from coordinator.config import load_config
from tests.support.configs import write_config

CONVNET_TRAIN = {"channels": 2, "batch_size": 64, "update_rule": "adam"}


def launch(cfg: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["launch", str(cfg), "--db",
                                     f"sqlite:///{tmp_path}/s.db", "--redis",
                                     "redis://127.0.0.1:1/0"])


def test_an_unregistered_model_exits_2_at_launch_writing_nothing(tmp_path: Path) -> None:
    res = launch(write_config(tmp_path / "c.yaml", model="convnt"), tmp_path)
    assert res.exit_code == 2, res.output
    assert "model: model 'convnt' is not installed" in res.output
    assert "did you mean 'convnet'" in res.output
    assert not (tmp_path / "s.db").exists()


def test_an_import_path_is_not_a_model_name(tmp_path: Path) -> None:
    res = launch(write_config(tmp_path / "c.yaml", model="os:system"), tmp_path)
    assert res.exit_code == 2 and "expected the name of a registered model" in res.output


def test_hyperparameters_are_checked_against_the_models_constructor(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", model="convnet",
                       train={**CONVNET_TRAIN, "hidden_size": 16},
                       space={"learning_rate": {"dist": "log_uniform", "low": 1e-3, "high": 1},
                              "num_filter": {"dist": "int_uniform", "low": 2, "high": 4}})
    res = launch(cfg, tmp_path)
    assert res.exit_code == 2, res.output
    assert "train.hidden_size: unknown hyperparameter 'hidden_size'" in res.output
    assert "space.num_filter: unknown hyperparameter 'num_filter'; did you mean " \
           "'num_filters'?" in res.output
    assert not (tmp_path / "s.db").exists()


def test_a_convnet_config_loads_with_its_own_and_the_trainers_settings(tmp_path: Path) -> None:
    cfg = load_config(write_config(
        tmp_path / "c.yaml", model="convnet", train=CONVNET_TRAIN,
        space={"learning_rate": {"dist": "log_uniform", "low": 1e-3, "high": 1},
               "num_filters": {"dist": "int_log_uniform", "low": 2, "high": 8},
               "reg": {"dist": "log_uniform", "low": 1e-5, "high": 1e-1}}))
    assert cfg.model == "convnet" and cfg.train["channels"] == 2
    assert cfg.to_dict()["model"] == "convnet"
    assert load_config(write_config(tmp_path / "m.yaml")).model == "mlp"  # the default
