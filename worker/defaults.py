"""Defaults defined once: the CLI's options and the worker program both read them.

A module of its own, free of imports, so that ``hpsweep --help`` stays fast.
"""

from __future__ import annotations

DEFAULT_DB = "sqlite:///hpsweep.db"  # relative: the folder the command runs in
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "hpsweep"  # the RQ queue
# Queued trials Redis carries per sweep: the first ENQUEUE_WINDOW by id. The rest wait in
# the database and every reconcile pass tops the window up, so a million-trial sweep
# costs Redis ~20 MB (an RQ job is ~2 KB) and a launch ~2 s of enqueueing, not minutes.
ENQUEUE_WINDOW = 10_000
