"""The default database URL, defined once: the CLI's ``--db`` and the worker's jobs read it.

A module of its own, free of imports, so that ``hpsweep --help`` stays fast.
"""

from __future__ import annotations

DEFAULT_DB = "sqlite:///hpsweep.db"  # relative: the folder the command runs in
