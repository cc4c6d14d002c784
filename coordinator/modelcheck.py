"""A sweep's ``model:``: a registered name, and the hyperparameters it takes.

``read_model`` checks the name against the installed models (``worker.models``: entry
points only, never an import path) and returns the table of names the sweep's ``train``
and ``space`` may use: the trainer's settings plus the model constructor's keyword
parameters. A stored config (``installed=False``) is read on machines that may lack the
model (a worker advancing a stage, ``ensemble``): its names were checked at launch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.checks import BAD, Problems, show
from worker import defaults, models
from worker.nn.hyper import SPEC, ParamSpec


def read_model(chk: Problems, data: Mapping[str, Any], installed: bool = True
               ) -> tuple[Any, Mapping[str, ParamSpec]]:
    """``(model name or BAD, its hyperparameter table)`` of a parsed config ``data``."""
    raw = data.get("model", defaults.MODEL)
    if not isinstance(raw, str) or not models.NAME.fullmatch(raw):
        chk.add("model", f"expected the name of a registered model (e.g. {defaults.MODEL!r}), "
                         f"got {show(raw)}")
        return BAD, _lenient(data)
    try:
        cls = models.load(raw)
    except models.ModelUnavailable as exc:
        if installed:
            chk.add("model", f"{exc}; install the package that registers it under the "
                             f"entry-point group {models.GROUP!r}")
        return (BAD if installed else raw), _lenient(data)
    return raw, models.hyper_table(cls)


def _lenient(data: Mapping[str, Any]) -> dict[str, ParamSpec]:
    """SPEC plus the names the config uses, typed by their values: for a model not
    installed here (a stored config), or to go on checking the rest after a bad name."""
    table = dict(SPEC)
    for section in ("train", "space"):
        raw = data.get(section)
        for name, value in (raw.items() if isinstance(raw, Mapping) else ()):
            if name in table or name == "schedule":
                continue
            kind = str if isinstance(value, str) else tuple if isinstance(value, list) \
                else float
            table[name] = ParamSpec(name=name, kind=kind, default=None, help="",
                                    searchable=kind is not tuple)
    return table
