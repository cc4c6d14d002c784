"""flagtext's copy of SPEC's integer parameters stays equal to SPEC (status must not import it)."""

from __future__ import annotations

from coordinator.flagtext import INTEGER_PARAMS, format_value
from worker.nn.hyper import SPEC


def test_integer_params_are_specs_integer_parameters() -> None:
    assert {name for name, spec in SPEC.items() if spec.kind is int} == INTEGER_PARAMS


def test_integers_print_as_integers_on_every_scale() -> None:
    assert format_value("hidden_size", 211.0, "log") == "211"
    assert format_value("batch_size", 64.0) == "64"
    assert format_value("learning_rate", 0.00123, "log") != "0"
