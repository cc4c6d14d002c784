"""Imports point down (coordinator -> worker -> storage; worker/nn -> numpy only, plus the
pure-NumPy npz writer it shares with the dataset codec)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.processes import ROOT

FORBIDDEN = {
    "storage": ("coordinator", "worker"),
    "worker": ("coordinator",),
}
NN_ALLOWED = {"numpy", "worker", "__future__", "dataclasses", "typing", "collections", "math",
              "inspect", "io", "hashlib", "json", "zipfile", "functools", "itertools", "enum",
              "struct", "time", "zlib"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_upper_ones(package: str) -> None:
    for path in python_files(package):
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN[package], f"{path.relative_to(ROOT)} imports {name}"


# pure NumPy modules of worker/ that worker/nn may use (held to the same rule)
NN_SHARED = ("worker.npzio",)


def test_nn_is_pure_numpy() -> None:
    shared = [ROOT / (m.replace(".", "/") + ".py") for m in NN_SHARED]
    for path in [*python_files("worker/nn"), *shared]:
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top in NN_ALLOWED, f"{path.relative_to(ROOT)} imports {name}"
            if top == "worker":
                assert name.startswith("worker.nn") or name in NN_SHARED, \
                    f"{path.relative_to(ROOT)} imports {name}"


def test_no_pickle_in_product_code() -> None:
    for package in ("coordinator", "worker", "storage"):
        for path in python_files(package):
            assert not {"pickle", "cloudpickle", "dill"} & imported_modules(path), path
            assert "allow_pickle=True" not in path.read_text(), path
