"""The order in which a stage's trials are enqueued. Pure, no I/O.

A stage whose successor is planned from a quorum keeps index order: its first
trials form the quorum, its last ones keep the workers busy while the next stage
is planned. The last stage has no successor and waits for all of its trials, so
its tail (one worker finishing the longest trial while the others idle) is the
one idle time left; enqueueing its longest trials first (LPT scheduling) shortens
it. A trial's length is estimated from what it will do: epochs left times the
multiply-adds per training example plus a per-minibatch cost, in the same units.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from worker.nn.hyper import SPEC, Hyper

# Python and NumPy overhead of one minibatch step (~75 us on the development machine),
# expressed in multiply-adds at a single core's ~20 GMAC/s on small matrices
STEP_COST = 1.5e6


def trial_cost(params: Mapping[str, Any], epochs_left: int, n_features: int,
               n_classes: int) -> float:
    """Relative running time of a trial: epochs x (multiply-adds per example + the
    per-step overhead shared by a minibatch's examples)."""
    hyper = Hyper.from_params({k: v for k, v in params.items() if k in SPEC})  # not a model's own
    dims = (n_features, *hyper.hidden, n_classes)
    macs = sum(a * b for a, b in itertools.pairwise(dims))
    return max(0, epochs_left) * (macs + STEP_COST / hyper.batch_size)


def longest_first(trial_ids: Sequence[int], costs: Sequence[float]) -> list[int]:
    """``trial_ids`` by decreasing cost (ties keep their order)."""
    order = sorted(range(len(trial_ids)), key=lambda i: -costs[i])
    return [trial_ids[i] for i in order]
