"""The hyperparameter table keeps one copy of each fact: rules' defaults, SPEC's, Hyper's."""

from __future__ import annotations

import ast
import dataclasses
import inspect

from worker.nn import optim
from worker.nn.hyper import RULE_NAMES, SPEC, Hyper


def test_rule_names_are_the_rules_table():
    assert tuple(optim.RULES) == RULE_NAMES
    assert SPEC["update_rule"].choices == RULE_NAMES


def test_rule_settings_default_to_the_rule_signatures():
    """Every keyword of every rule is a SPEC setting of that name, with the rule's default."""
    seen = set()
    for name, rule in optim.RULES.items():
        for p in list(inspect.signature(rule).parameters.values())[4:]:  # after x, dx, state, lr
            assert SPEC[p.name].default == p.default, (name, p.name)
            assert getattr(Hyper(), p.name) == p.default, (name, p.name)
            seen.add(p.name)
    assert seen == {"momentum", "beta1", "beta2", "eps", "decay_rate"}


def test_hyper_defaults_are_specs():
    h = Hyper()
    for f in dataclasses.fields(Hyper):
        if f.name == "hidden":
            assert h.hidden == (SPEC["hidden_size"].default,) * SPEC["depth"].default
        else:
            assert getattr(h, f.name) == SPEC[f.name].default, f.name
    assert Hyper.from_params({}) == h


def test_optim_does_not_import_hyper():
    """optim owns the rules' defaults; hyper reads them from it, never the reverse."""
    tree = ast.parse(inspect.getsource(optim))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "worker.nn" in imported  # the check sees optim's own imports
    assert "worker.nn.hyper" not in imported and "hyper" not in names
