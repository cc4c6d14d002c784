"""Sweep config: the documented shape loads; every mistake is named, all at once."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import pytest
import yaml

from coordinator.config import ConfigError, StageConfig, SweepConfig, load_config, parse_config
from coordinator.datasets.spec import EXPECTED as DATASETS
from coordinator.space import Choice, Range

EXAMPLE = """\
name: digits-mlp
dataset: digits            # digits | spiral | path/to/data.npz | path/to/data.csv
seed: 0
train:
  depth: 1                # hidden layers; their width is searched below
  batch_size: 64
  update_rule: nesterov    # sgd momentum nesterov adagrad rmsprop adam
  schedule: {kind: step, every: 5, factor: 0.5}
space:
  learning_rate: {dist: log_uniform, low: 1.0e-6, high: 1.0e-1}
  reg:           {dist: log_uniform, low: 1.0e-5, high: 1.0e+1}
  dropout:       {dist: uniform, low: 0.0, high: 0.5}
  hidden_size:   {dist: int_log_uniform, low: 16, high: 512}
  momentum:      {dist: choice, values: [0.5, 0.9, 0.95, 0.99]}
stages:
  - {trials: 60, epochs: 1}
  - {trials: 20, epochs: 5}
  - {trials: 6, epochs: 20}
"""
BASE = yaml.safe_load(EXAMPLE)
DELETE = object()


def write(tmp_path: Path, text: str, name: str = "demo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def changed(*edits: tuple[str, object]) -> dict:
    """BASE with ``("space.dropout.high", 1)``-style edits (list items by index)."""
    data = copy.deepcopy(BASE)
    for path, value in edits:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        key = int(last) if isinstance(node, list) else last
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    return data


def problems(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "demo.yaml")
    return info.value.problems


def test_the_documented_example_loads_with_defaults(tmp_path):
    cfg = load_config(write(tmp_path, EXAMPLE))
    assert cfg.name == "digits-mlp" and cfg.dataset == "digits" and cfg.seed == 0
    assert dict(cfg.train) == {"depth": 1, "batch_size": 64, "update_rule": "nesterov",
                               "schedule": "step", "schedule_every": 5, "schedule_factor": 0.5}
    assert cfg.space["learning_rate"] == Range(1e-6, 1e-1, "log")
    assert cfg.space["hidden_size"] == Range(16, 512, "log", integer=True)
    assert cfg.space["momentum"] == Choice((0.5, 0.9, 0.95, 0.99))
    assert list(cfg.space) == ["learning_rate", "reg", "dropout", "hidden_size", "momentum"]
    assert [(s.trials, s.epochs) for s in cfg.stages] == [(60, 1), (20, 5), (6, 20)]
    defaults = {f.name: f.default for f in dataclasses.fields(StageConfig)
                if f.default is not dataclasses.MISSING}
    assert all(dataclasses.asdict(s) | defaults == dataclasses.asdict(s) for s in cfg.stages)
    assert (cfg.max_attempts, cfg.select, cfg.keep_snapshots) == (3, "best", 0)
    assert (cfg.val_fraction, cfg.test_fraction, cfg.description) == (0.14, 0.14, "")


def test_config_is_frozen():
    cfg = parse_config(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.train["depth"] = 3  # type: ignore[index]


def test_stage_keys_optional_keys_and_lists_are_read():
    data = changed(("stages", [{"trials": 60, "epochs": 1, "keep": 10, "margin": 0.2,
                                "carry": 2, "edge": 0.2}, {"trials": 20, "epochs": 5,
                                                           "keep": 0.3}]),
                   ("train.hidden", [200, 100]), ("train.depth", DELETE),
                   ("space.hidden_size", DELETE),
                   ("train.momentum_schedule", [0.5, 0.9, 0.99]), ("select", "raw"),
                   ("max_attempts", 5), ("keep_snapshots", 2), ("val_fraction", 0.2),
                   ("test_fraction", 0.1), ("description", "a test"))
    cfg = parse_config(data)
    assert cfg.stages[0] == StageConfig(60, 1, keep=10, margin=0.2, carry=2, edge=0.2)
    assert cfg.stages[1].keep == 0.3 and isinstance(cfg.stages[0].keep, int)
    assert cfg.train["hidden"] == (200, 100)
    assert cfg.train["momentum_schedule"] == (0.5, 0.9, 0.99)
    assert (cfg.select, cfg.max_attempts, cfg.keep_snapshots) == ("raw", 5, 2)
    assert (cfg.val_fraction, cfg.test_fraction, cfg.description) == (0.2, 0.1, "a test")


def test_large_integers_stay_exact():
    assert parse_config(changed(("seed", 2**63 - 1))).seed == 2**63 - 1


def test_numeric_strings_are_numbers(tmp_path):
    # PyYAML reads 1e-3 (no dot) as a string: accept it as the number it clearly is
    text = EXAMPLE.replace("low: 1.0e-6, high: 1.0e-1", "low: 1e-6, high: 1e-1")
    assert yaml.safe_load(text)["space"]["learning_rate"]["low"] == "1e-6"
    cfg = load_config(write(tmp_path, text))
    assert cfg.space["learning_rate"] == Range(1e-6, 1e-1, "log")
    cfg = parse_config(changed(("space.momentum.values", ["0.5", 0.9]), ("train.batch_size", "32")))
    assert cfg.space["momentum"] == Choice((0.5, 0.9)) and cfg.train["batch_size"] == 32


BAD_CASES = [
    # (edits, expected message, exactly as printed)
    ([("space.learning_rate.low", 0)],
     "demo.yaml: space.learning_rate.low: must be > 0 for log_uniform, got 0"),
    ([("space.learning_rate.low", -6)],
     "demo.yaml: space.learning_rate.low: must be > 0 for log_uniform, got -6"),
    ([("stages.1.epochs", 0)], "demo.yaml: stages[1].epochs: expected a positive integer, got 0"),
    ([("stages.0.trials", -5)], "demo.yaml: stages[0].trials: expected a positive integer, got -5"),
    ([("stages.0.trials", 2.5)],
     "demo.yaml: stages[0].trials: expected a positive integer, got 2.5"),
    ([("stages.0.trials", DELETE)], "demo.yaml: stages[0].trials: missing required key"),
    ([("stage", [])], "demo.yaml: stage: unknown key 'stage'; did you mean 'stages'?"),
    ([("dataset", DELETE)], "demo.yaml: dataset: missing required key"),
    ([("space", {"learning_rat": {"dist": "uniform", "low": 0.1, "high": 1}})],
     "demo.yaml: space.learning_rat: unknown hyperparameter 'learning_rat'; "
     "did you mean 'learning_rate'?"),
    ([("train.batchsize", 32)],
     "demo.yaml: train.batchsize: unknown hyperparameter 'batchsize'; did you mean 'batch_size'?"),
    ([("space.reg.dist", "loguniform")],
     "demo.yaml: space.reg.dist: unknown distribution 'loguniform'; expected one of choice, "
     "int_log_uniform, int_uniform, log_uniform, uniform; did you mean 'log_uniform'?"),
    ([("space.reg.dist", DELETE)], "demo.yaml: space.reg.dist: missing required key; expected "
     "one of choice, int_log_uniform, int_uniform, log_uniform, uniform"),
    ([("space.reg.low", 10.0)],
     "demo.yaml: space.reg: low must be < high, got low 10.0 >= high 10.0"),
    ([("space.dropout.low", 0.4), ("space.dropout.high", 0.1)],
     "demo.yaml: space.dropout: low must be < high, got low 0.4 >= high 0.1"),
    ([("space.dropout.high", float("nan"))],
     "demo.yaml: space.dropout.high: expected a finite number, got nan"),
    ([("space.reg.high", float("inf"))],
     "demo.yaml: space.reg.high: expected a finite number, got inf"),
    ([("space.learning_rate.low", "abc")],
     "demo.yaml: space.learning_rate.low: expected a number, got 'abc'"),
    ([("space.learning_rate.low", "nan")],
     "demo.yaml: space.learning_rate.low: expected a finite number, got 'nan'"),
    ([("space.dropout.low", True)], "demo.yaml: space.dropout.low: expected a number, got true"),
    ([("train.batch_size", False)], "demo.yaml: train.batch_size: expected an integer, got false"),
    ([("space.momentum.values", [])],
     "demo.yaml: space.momentum.values: expected a non-empty list, got an empty list"),
    ([("space.momentum.values", [0.5, 1.0])],
     "demo.yaml: space.momentum.values[1]: must be < 1, got 1"),
    ([("space.momentum.values", [0.5, 0.5])],
     "demo.yaml: space.momentum.values[1]: duplicate value, got 0.5"),
    ([("space.update_rule", {"dist": "choice", "values": ["sgd", "adamw"]})],
     "demo.yaml: space.update_rule.values[1]: unknown update_rule 'adamw'; expected one of "
     "adagrad, adam, momentum, nesterov, rmsprop, sgd; did you mean 'adam'?"),
    ([("space.batch_size", {"dist": "choice", "values": [32, 64]})],
     "demo.yaml: space.batch_size: also fixed in train; a parameter is either fixed (train) or "
     "searched (space), not both"),
    ([("space.schedule", {"dist": "choice", "values": ["step", "constant"]})],
     "demo.yaml: space.schedule: also fixed in train; a parameter is either fixed (train) or "
     "searched (space), not both"),
    ([("dataset", "digit")], f"demo.yaml: dataset: unknown dataset 'digit'; {DATASETS}; "
     "did you mean 'digits'?"),
    ([("dataset", "cifar")], f"demo.yaml: dataset: unknown dataset 'cifar'; {DATASETS}; "
     "did you mean 'cifar10:'?"),
    ([("dataset", "cifar.txt")], "demo.yaml: dataset: unsupported file type '.txt'; expected "
     "a .npz or .csv file, got 'cifar.txt'"),
    ([("dataset", 3)], f"demo.yaml: dataset: {DATASETS}, got 3"),
    ([("dataset", {"train": "a.txt"})], "demo.yaml: dataset.train: unsupported file type "
     "'.txt'; expected a .npz or .csv file, got 'a.txt'"),
    ([("preprocess", "whiten")], "demo.yaml: preprocess: expected one of standardize, "
     "mean_image, none, got 'whiten'"),
    ([("space.hidden", {"dist": "choice", "values": [1]})],
     "demo.yaml: space.hidden: cannot be searched (explicit hidden widths, e.g. [200, 100]); "
     "fix it under train"),
    ([("space.dropout.high", 1)], "demo.yaml: space.dropout.high: must be < 1, got 1"),
    ([("space.dropout.low", -0.1)], "demo.yaml: space.dropout.low: must be >= 0, got -0.1"),
    ([("space.hidden_size.low", 0), ("space.hidden_size.dist", "int_uniform")],
     "demo.yaml: space.hidden_size.low: must be >= 1, got 0"),
    ([("space.hidden_size.low", 16.5)],
     "demo.yaml: space.hidden_size.low: expected an integer, got 16.5"),
    ([("space.hidden_size.dist", "uniform")],
     "demo.yaml: space.hidden_size.dist: hidden_size takes integers; use int_uniform or "
     "int_log_uniform, got uniform"),
    ([("space.update_rule", {"dist": "uniform", "low": 0, "high": 1})],
     "demo.yaml: space.update_rule.dist: update_rule is categorical; use choice, got uniform"),
    ([("space.reg.step", 2)], "demo.yaml: space.reg.step: unknown key 'step'; expected one of "
     "dist, low, high, min, max"),
    ([("space.reg.min", 1e-3)], "demo.yaml: space.reg.low: must be >= min (0.001), got 1e-05"),
    ([("space.reg.max", 1.0)], "demo.yaml: space.reg.high: must be <= max (1.0), got 10.0"),
    ([("space.learning_rate", 0.1)],
     "demo.yaml: space.learning_rate: expected a mapping with 'dist', got 0.1"),
    ([("space", {})], "demo.yaml: space: expected a mapping of parameters to search, got an "
     "empty mapping"),
    ([("seed", 10**400)], "demo.yaml: seed: expected a finite number, got 1" + "0" * 56 + "..."),
    ([("seed", 2**63)], "demo.yaml: seed: expected an integer >= 0, got 9223372036854775808"),
    ([("space.reg.high", 10**400)],
     "demo.yaml: space.reg.high: expected a finite number, got 1" + "0" * 56 + "..."),
    ([("stages", [])], "demo.yaml: stages: expected a non-empty list of stages, got an empty "
     "list"),
    ([("stages.1", 20)], "demo.yaml: stages[1]: expected a mapping like {trials: 20, epochs: 5}, "
     "got 20"),
    ([("stages.0.epoch", 1)], "demo.yaml: stages[0].epoch: unknown key 'epoch'; did you mean "
     "'epochs'?"),
    ([("stages.0.keep", 0)],
     "demo.yaml: stages[0].keep: expected a fraction in (0, 1) or a count >= 1, got 0"),
    ([("stages.0.keep", 1.5)],
     "demo.yaml: stages[0].keep: expected a fraction in (0, 1) or a count >= 1, got 1.5"),
    ([("stages.0.margin", -0.1)],
     "demo.yaml: stages[0].margin: expected a fraction in [0, 1], got -0.1"),
    ([("stages.0.edge", 0.5)],
     "demo.yaml: stages[0].edge: expected a fraction in [0, 0.5), got 0.5"),
    ([("stages.1.carry", 7)],
     "demo.yaml: stages[1].carry: must be <= stages[2].trials (6), got 7"),
    ([("stages.1.carry", -1)], "demo.yaml: stages[1].carry: expected an integer >= 0, got -1"),
    ([("train.schedule.evry", 5)],
     "demo.yaml: train.schedule.evry: unknown key 'evry'; did you mean 'every'?"),
    ([("train.schedule_every", 3)],
     "demo.yaml: train.schedule_every: given twice (also as train.schedule.every)"),
    ([("train.schedule.kind", "cosine")], "demo.yaml: train.schedule.kind: unknown schedule "
     "'cosine'; expected one of constant, exponential, inverse_time, plateau, step"),
    ([("train.hidden", [200, 0])], "demo.yaml: train.hidden[1]: must be >= 1, got 0"),
    ([("train.hidden", [])], "demo.yaml: train.hidden: expected a non-empty list, got an empty "
     "list"),
    ([("train.hidden", [100])],
     "demo.yaml: space.hidden_size: has no effect: train.hidden fixes every hidden width; "
     "remove one of them"),
    ([("train.momentum_schedule", [0.5, 1.5])],
     "demo.yaml: train.momentum_schedule[1]: must be < 1, got 1.5"),
    ([("train", [1, 2])], "demo.yaml: train: expected a mapping of fixed hyperparameters, got a "
     "list [1, 2]"),
    ([("name", "my sweep")], "demo.yaml: name: expected a name of letters, digits, '.', '_' or "
     "'-' (at most 100), got 'my sweep'"),
    ([("seed", -1)], "demo.yaml: seed: expected an integer >= 0, got -1"),
    ([("max_attempts", 0)], "demo.yaml: max_attempts: expected a positive integer, got 0"),
    ([("select", "emma")], "demo.yaml: select: expected one of raw, ema, best, got 'emma'; "
     "did you mean 'ema'?"),
    ([("select", "ema")], "demo.yaml: select: 'ema' needs parameter averaging: set "
     "train.ema_decay > 0 (e.g. 0.999) or search ema_decay, got no ema_decay"),
    ([("val_fraction", 0)], "demo.yaml: val_fraction: expected a fraction in (0, 1), got 0"),
    ([("val_fraction", 0.5), ("test_fraction", 0.5)], "demo.yaml: test_fraction: val_fraction + "
     "test_fraction must be < 0.9 (leave data to train on), got 1"),
    ([("description", 3)], "demo.yaml: description: expected text, got 3"),
    ([("checkpoints", {"keep": "best"})], "demo.yaml: checkpoints.keep: expected one of top, "
     "all, none, got 'best'"),
    ([("checkpoints", {"keep": "top", "top": 0})], "demo.yaml: checkpoints.top: expected a "
     "positive integer, got 0"),
    ([("checkpoints", {"kept": "all"})], "demo.yaml: checkpoints.kept: unknown key 'kept'; did "
     "you mean 'keep'?"),
    ([("checkpoints", "top")], "demo.yaml: checkpoints: expected a mapping like {keep: top, "
     "top: 10}, got 'top'"),
]


@pytest.mark.parametrize("edits, message", BAD_CASES, ids=[m.split(": ")[1] + f"-{i}"
                                                           for i, (_, m) in enumerate(BAD_CASES)])
def test_each_mistake_is_named_with_file_key_and_rule(edits, message):
    assert problems(changed(*edits)) == [message]


def test_every_problem_is_collected_and_printed_one_per_line():
    data = changed(("space.learning_rate.low", 0), ("stages.1.epochs", 0), ("seed", "x"),
                   ("space.momentum.values", []), ("stags", 1), ("dataset", "nope.bin"))
    with pytest.raises(ConfigError) as info:
        parse_config(data, "cifar.yaml")
    err = info.value
    assert len(err.problems) == 6
    assert str(err).splitlines() == err.problems
    assert all(p.startswith("cifar.yaml: ") for p in err.problems)
    assert "cifar.yaml: space.learning_rate.low: must be > 0 for log_uniform, got 0" in err.problems
    assert isinstance(err, ValueError)


@pytest.mark.parametrize("data, message", [
    (None, "demo.yaml: expected a mapping with keys name, dataset, space, stages, got an empty "
           "file"),
    ([1, 2], "demo.yaml: expected a mapping with keys name, dataset, space, stages, got a list "
             "[1, 2]"),
    ("text", "demo.yaml: expected a mapping with keys name, dataset, space, stages, got 'text'"),
])
def test_top_level_must_be_a_mapping(data, message):
    assert problems(data) == [message]


def test_missing_keys_are_all_listed():
    assert problems({"seed": 1}) == [f"demo.yaml: {k}: missing required key"
                                     for k in ("name", "dataset", "space", "stages")]


def test_file_problems(tmp_path):
    cases = {
        tmp_path / "missing.yaml": "file not found",
        tmp_path: "is a directory, expected a YAML file",
        write(tmp_path, "name: x\n  bad: [1\n", "broken.yaml"):
            "invalid YAML at line 2, column 6: mapping values are not allowed here",
        write(tmp_path, "", "empty.yaml"):
            "expected a mapping with keys name, dataset, space, stages, got an empty file",
    }
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    cases[binary] = "cannot read the file: "
    for path, message in cases.items():
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.problems[0].startswith(f"{path}: {message}"), info.value.problems


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path):
    path = write(tmp_path, EXAMPLE)
    path.chmod(0)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: cannot read the file: Permission denied"]


def test_dataset_folders_and_parts_resolve_like_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifar-10-batches-bin").mkdir()
    for name in ("a.csv", "b.npz"):
        (tmp_path / name).write_bytes(b"x")
    cifar = load_config(write(tmp_path, EXAMPLE.replace(
        "dataset: digits", "dataset: cifar10:cifar-10-batches-bin")))
    assert cifar.dataset == f"cifar10:{tmp_path.resolve() / 'cifar-10-batches-bin'}"
    parts = load_config(write(tmp_path, EXAMPLE.replace(
        "dataset: digits", "dataset: {train: a.csv, test: b.npz}\npreprocess: mean_image")))
    assert dict(parts.dataset) == {"train": str(tmp_path.resolve() / "a.csv"),
                                   "test": str(tmp_path.resolve() / "b.npz")}
    assert parts.preprocess == "mean_image"
    again = SweepConfig.from_dict(json.loads(json.dumps(parts.to_dict())))
    assert again == parts and again.to_dict() == parts.to_dict()
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, EXAMPLE.replace("dataset: digits", "dataset: mnist:nope")))
    [message] = info.value.problems
    assert "dataset: folder not found (looked in " in message and message.endswith("'nope'")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, EXAMPLE.replace(
            "dataset: digits", "dataset: {tset: a.csv, val: c.csv}")))
    tset, train, val = (p.split(": ", 1)[1] for p in info.value.problems)
    assert tset == "dataset.tset: unknown part 'tset'; did you mean 'test'?; expected train, " \
                   "val, test"
    assert train == "dataset.train: required (the training rows' file), got nothing"
    assert val.startswith("dataset.val: file not found (looked in ") and "'c.csv'" in val


def test_dataset_path_is_tried_in_cwd_then_next_to_the_config(tmp_path, monkeypatch):
    cfg_dir, cwd = tmp_path / "configs", tmp_path / "cwd"
    cfg_dir.mkdir()
    cwd.mkdir()
    (cfg_dir / "data.npz").write_bytes(b"x")
    text = EXAMPLE.replace("dataset: digits", "dataset: data.npz")
    path = write(cfg_dir, text)
    monkeypatch.chdir(cwd)
    assert load_config(path).dataset == str((cfg_dir / "data.npz").resolve())
    (cwd / "data.npz").write_bytes(b"y")  # the current directory wins
    assert load_config(path).dataset == str((cwd / "data.npz").resolve())
    assert Path(load_config(path).dataset).is_absolute()


def test_missing_dataset_file_is_an_error_at_load_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, EXAMPLE.replace("dataset: digits", "dataset: data/cifar.csv"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [message] = info.value.problems
    assert message.startswith(f"{path}: dataset: file not found (looked in ")
    assert message.endswith("got 'data/cifar.csv'")


def test_round_trip_through_json_without_rechecking_the_dataset(tmp_path):
    data_file = tmp_path / "data.csv"
    data_file.write_text("1,2,0\n")
    text = EXAMPLE.replace("dataset: digits", f"dataset: {data_file}")
    text += "select: raw\nmax_attempts: 4\n"
    cfg = load_config(write(tmp_path, text))
    stored = json.dumps(cfg.to_dict())  # the sweep's config column
    data_file.unlink()  # another host: the file is not there, and need not be
    again = SweepConfig.from_dict(json.loads(stored))
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    assert again.dataset == str(data_file.resolve())


def test_from_dict_still_refuses_a_broken_stored_config():
    d = parse_config(BASE).to_dict()
    d["stages"][0]["trials"] = 0
    with pytest.raises(ConfigError, match=r"<stored config>: stages\[0\].trials"):
        SweepConfig.from_dict(d)


CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_example_configs_load(path):
    cfg = load_config(path)
    assert cfg.stages and cfg.space


def test_checkpoints_policy_defaults_and_round_trip():
    assert dataclasses.asdict(parse_config(BASE).checkpoints) == {"keep": "top", "top": 10}
    cfg = parse_config(changed(("checkpoints", {"keep": "all"})))
    assert (cfg.checkpoints.keep, cfg.checkpoints.top) == ("all", 10)
    assert SweepConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
