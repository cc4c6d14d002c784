"""Names the command line offers as choices, defined once.

Import-free, so that ``hpsweep --help`` stays fast (``coordinator.ensemble`` pulls
NumPy and SQLAlchemy, ~0.5 s); the modules that implement them import them from here.
"""

from __future__ import annotations

ENSEMBLE_METHODS = ("top-k", "seeds", "snapshots", "average")  # coordinator.ensemble
