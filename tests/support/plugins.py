"""Model plug-ins for the tests, installed the way pip installs a package.

An installed distribution is, to ``importlib.metadata``, a ``<name>-<version>.dist-info``
folder on ``sys.path`` holding ``METADATA`` and ``entry_points.txt``; pip's editable
install adds the project's source folder to the path beside it. ``install`` writes exactly
that into a folder of the caller's, with the entry points read from the project's own
pyproject.toml, so the tests exercise the real registration of ``examples/`` packages
without a network or build step (a fresh clone's ``pip install -e '.[dev]'`` and
``python -m pytest`` need nothing else). Worker processes the tests start inherit the
folders through ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONVNET = ROOT / "examples" / "hpsweep-convnet"


def write_dist_info(dest: Path, dist: str, version: str,
                    entry_points: dict[str, dict[str, str]]) -> Path:
    """A ``.dist-info`` folder in ``dest`` registering ``entry_points`` (group -> name ->
    ``module:attr``); returns ``dest``, the folder to put on ``sys.path``."""
    info = dest / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return dest


def install(project: Path, dest: Path) -> list[Path]:
    """Install the project at ``project`` (a pyproject.toml with ``src/``) into ``dest``;
    returns the ``sys.path`` entries it needs (the metadata folder, the source folder)."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    write_dist_info(dest, meta["name"], meta["version"], meta.get("entry-points", {}))
    return [dest, project / "src"]


def activate(paths: list[Path]) -> None:
    """Put ``paths`` on this process's path and on its children's ``PYTHONPATH``."""
    entries = [str(p) for p in paths]
    sys.path[:0] = [e for e in entries if e not in sys.path]
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([*entries, *([old] if old else [])])
