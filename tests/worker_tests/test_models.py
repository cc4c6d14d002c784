"""Models by registered name: entry points only, never a path."""

from __future__ import annotations

import pytest

from worker import models
from worker.nn.mlp import MLP


def test_the_builtin_mlp_and_the_example_convnet_are_registered() -> None:
    assert models.load("mlp") is MLP
    assert models.load("convnet").__name__ == "ConvNet"
    assert models.registered()["mlp"].value == "worker.nn.mlp:MLP"


@pytest.mark.parametrize("name", ["os:system", "os.path", "../evil", "/tmp/x.py", "", "a b"])
def test_paths_and_import_strings_are_not_model_names(name: str) -> None:
    with pytest.raises(models.ModelUnavailable):
        models.load(name)


def test_an_unregistered_name_lists_the_installed_ones_and_suggests() -> None:
    with pytest.raises(models.ModelUnavailable, match=r"convnet, mlp.*did you mean 'convnet'"):
        models.load("convnt")


def test_a_worker_offers_only_the_models_it_names() -> None:
    offered = models.parse_offered(" mlp, ")
    assert offered == frozenset({"mlp"}) and models.parse_offered("") is None
    assert models.check_offered("mlp", offered) is MLP
    with pytest.raises(models.ModelUnavailable, match="not offered by this worker"):
        models.check_offered("convnet", offered)


def test_hyper_table_joins_the_trainers_settings_and_the_constructors() -> None:
    table = models.hyper_table(models.load("convnet"))
    assert table["num_filters"].kind is int and table["channels"].kind is int
    assert table["reg"] is models.SPEC["reg"]  # SPEC's name, SPEC's limits
    assert "learning_rate" in table and "hidden_size" not in table
    assert {"hidden_size", "depth", "dropout", "reg"} <= set(models.hyper_table(MLP))
