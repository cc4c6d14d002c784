"""Defaults defined once: the CLI's options and the worker program both read them.

A module of its own, free of imports, so that ``hpsweep --help`` stays fast.
"""

from __future__ import annotations

DEFAULT_DB = "sqlite:///hpsweep.db"  # relative: the folder the command runs in
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "hpsweep"  # the RQ queue
