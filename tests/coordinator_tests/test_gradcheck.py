"""``hpsweep gradcheck MODEL``: the notes' sanity checks as a pass/fail table."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from coordinator.cli import main
from tests.support import plugins

WRONG_MODEL = '''
import numpy as np


class WrongGrad:
    """A softmax classifier whose bias gradient is twice what it should be."""

    def __init__(self, input_shape, num_classes, rng=None, dtype=np.float32):
        d = int(np.prod(input_shape))
        self.params = {"W": (0.01 * rng.standard_normal((d, num_classes))).astype(dtype),
                       "b": np.zeros(num_classes, dtype)}

    def loss(self, X, y=None):
        X = X.reshape(X.shape[0], -1)
        s = X @ self.params["W"] + self.params["b"]
        if y is None:
            return s
        s = s - s.max(axis=1, keepdims=True)
        p = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
        n = X.shape[0]
        loss = -np.log(p[np.arange(n), y]).mean()
        p[np.arange(n), y] -= 1
        p /= n
        return loss, {"W": X.T @ p, "b": 2 * p.sum(axis=0)}
'''


def gradcheck(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["gradcheck", *args], catch_exceptions=False)


@pytest.mark.parametrize("args", [("mlp",), ("mlp", "--set", "depth=2", "--set", "dropout=0.3"),
                                  ("convnet", "--input-shape", "1,8,8")])
def test_the_builtin_and_the_example_model_pass(args: tuple[str, ...]) -> None:
    res = gradcheck(*args)
    assert res.exit_code == 0, res.output
    assert "all checks passed" in res.output and "FAIL" not in res.output
    for row in ("gradient W1 (reg 0)", "gradient b1 (reg 0.1)", "initial loss",
                "overfit 20 examples"):
        assert row in res.output


def test_a_wrong_gradient_fails_naming_the_parameter(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "wrong_grad_model.py").write_text(WRONG_MODEL)
    plugins.write_dist_info(tmp_path, "wrong-grad", "0.0.1",
                            {"hpsweep.models": {"wronggrad": "wrong_grad_model:WrongGrad"}})
    monkeypatch.syspath_prepend(str(tmp_path))
    res = gradcheck("wronggrad", "--input-shape", "5")
    assert res.exit_code == 1, res.output
    failed = [line.split()[1] for line in res.output.splitlines()
              if line.startswith("gradient") and "FAIL" in line]
    assert failed == ["b"], res.output  # the parameter whose gradient is wrong, named
    assert any(line.startswith("gradient W ") and " pass " in line
               for line in res.output.splitlines())


def test_bad_input_exits_2() -> None:
    res = CliRunner().invoke(main, ["gradcheck", "convnt"])
    assert res.exit_code == 2 and "did you mean 'convnet'" in res.output
    res = CliRunner().invoke(main, ["gradcheck", "convnet", "--set", "num_filter=4"])
    assert res.exit_code == 2 and "did you mean 'num_filters'" in res.output
    res = CliRunner().invoke(main, ["gradcheck", "mlp", "--input-shape", "3,x"])
    assert res.exit_code == 2 and "--input-shape" in res.output
