"""The config's ``dataset`` key: which forms it takes, and where its files are.

Paths are resolved when the config is loaded (against the current directory, then
the config file's folder) and stored absolute; the files are read only by
``load_source`` at launch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordinator.checks import BAD, Problems, show, suggest

BUILTIN_NAMES = ("digits", "spiral")
FOLDER_PREFIXES = ("cifar10", "mnist")
FILE_SUFFIXES = (".npz", ".csv")
PART_NAMES = ("train", "val", "test")
EXPECTED = ("expected digits, spiral, a path to a .npz or .csv file, cifar10:FOLDER, "
            "mnist:FOLDER, or a mapping {train: FILE, val: FILE, test: FILE}")


def read_dataset(chk: Problems, raw: Any, base_dir: Path | None, check_files: bool) -> Any:
    """The dataset spec with its paths made absolute, or ``BAD`` (problems recorded)."""
    if isinstance(raw, Mapping):
        return _read_parts(chk, raw, base_dir, check_files)
    if not isinstance(raw, str) or not raw.strip():
        chk.add("dataset", f"{EXPECTED}, got {show(raw)}")
        return BAD
    if raw in BUILTIN_NAMES:
        return raw
    prefix, sep, folder = raw.partition(":")
    if sep and prefix in FOLDER_PREFIXES:
        found = _resolve(chk, "dataset", folder, base_dir, check_files, folder=True)
        return BAD if found is BAD else f"{prefix}:{found}"
    suffix = Path(raw).suffix.lower()
    if not suffix:
        forms = (*BUILTIN_NAMES, *(f"{p}:" for p in FOLDER_PREFIXES))
        chk.add("dataset", f"unknown dataset {raw!r}; {EXPECTED}{suggest(raw, forms)}")
        return BAD
    return _read_file(chk, "dataset", raw, base_dir, check_files)


def _read_parts(chk: Problems, raw: Mapping, base_dir: Path | None, check_files: bool) -> Any:
    before = len(chk.problems)
    for key in raw:
        if key not in PART_NAMES:
            chk.add(f"dataset.{key}", f"unknown part {key!r}{suggest(key, PART_NAMES)}; "
                                      f"expected train, val, test")
    if "train" not in raw:
        chk.add("dataset.train", "required (the training rows' file), got nothing")
    out = {}
    for part in (p for p in PART_NAMES if p in raw):
        value = raw[part]
        if not isinstance(value, str) or not value.strip():
            chk.add(f"dataset.{part}", f"expected a path to a .npz or .csv file, got "
                                       f"{show(value)}")
            continue
        out[part] = _read_file(chk, f"dataset.{part}", value, base_dir, check_files)
    return BAD if len(chk.problems) > before else out


def _read_file(chk: Problems, key: str, raw: str, base_dir: Path | None,
               check_files: bool) -> Any:
    suffix = Path(raw).suffix.lower()
    if suffix not in FILE_SUFFIXES:
        chk.add(key, f"unsupported file type {suffix!r}; expected a .npz or .csv file, got "
                     f"{raw!r}")
        return BAD
    return _resolve(chk, key, raw, base_dir, check_files, folder=False)


def _resolve(chk: Problems, key: str, raw: str, base_dir: Path | None, check_files: bool,
             folder: bool) -> Any:
    """``raw`` made absolute: the first of (cwd, ``base_dir``) / raw that exists."""
    if not check_files:
        return raw
    path = Path(raw).expanduser()
    tried = [path] if path.is_absolute() else [Path.cwd() / path]
    if base_dir is not None and not path.is_absolute():
        tried.append(Path(base_dir) / path)
    for candidate in tried:
        try:
            found = candidate.is_dir() if folder else candidate.is_file()
        except (OSError, ValueError):  # a name with a NUL byte, or too long
            found = False
        if found:
            if not os.access(candidate, os.R_OK | (os.X_OK if folder else 0)):
                chk.add(key, f"cannot read the {'folder' if folder else 'file'}, got "
                             f"{str(candidate)!r}")
                return BAD
            return str(candidate.resolve())
    where = ", ".join(dict.fromkeys(str(p.parent.resolve()) for p in tried))  # once each
    chk.add(key, f"{'folder' if folder else 'file'} not found (looked in {where}), got {raw!r}")
    return BAD
