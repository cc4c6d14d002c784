"""Lease renewal: one ``LeaseKeeper`` renews the leases of the attempts a worker process
runs, every ``lease/3`` seconds, from one thread.

A worker process keeps one keeper across its jobs (``worker.jobs.Runtime.keeper``); an
attempt run without one (a test, a benchmark) gets a keeper of its own. The thread starts
with the first lease held and ends once none is held, so nothing outlives its attempts and
nothing waits on a join. (A thread started and joined per trial costs a short trial more
than its bookkeeping on a busy machine: the join waits for the thread to be scheduled.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from storage import attempts
from storage.attempts import LeaseLost
from storage.db import transact

log = logging.getLogger(__name__)


def renew(engine: Engine, trial_id: int, token: str, lease_seconds: float) -> bool:
    """Push the attempt's lease forward; False once it is lost (a failed beat is retried
    next period)."""
    try:
        transact(engine, lambda s: attempts.renew_lease(s, engine, trial_id, token,
                                                        lease_seconds))
    except LeaseLost:
        return False
    except Exception as exc:  # noqa: BLE001 - a missed beat is retried next period
        log.warning("trial %d: heartbeat failed: %s", trial_id, exc)
    return True


class LeaseKeeper:
    """Renews every held lease each ``lease_seconds / 3`` seconds, from one thread."""

    def __init__(self, engine: Engine, lease_seconds: float) -> None:
        self._engine, self._lease = engine, lease_seconds
        self._held: dict[int, tuple[str, threading.Event]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, trial_id: int, token: str) -> Iterator[threading.Event]:
        """Renew this attempt's lease while the block runs; the event is set once it is
        lost (taken over, cancelled or finished elsewhere)."""
        lost = self.hold(trial_id, token)
        try:
            yield lost
        finally:
            self.drop(trial_id, token)

    def hold(self, trial_id: int, token: str) -> threading.Event:
        """Renew this attempt's lease until ``drop``; the event is set once it is lost."""
        lost = threading.Event()
        with self._lock:
            self._held[trial_id] = (token, lost)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lease-keeper",
                                                daemon=True)
                self._thread.start()
        return lost

    def drop(self, trial_id: int, token: str | None = None) -> None:
        """Stop renewing the trial's lease (only this attempt's, given its ``token``)."""
        with self._lock:
            held = self._held.get(trial_id)
            if held is not None and token in (None, held[0]):
                del self._held[trial_id]

    def _run(self) -> None:
        while True:
            time.sleep(self._lease / 3)
            with self._lock:
                held = list(self._held.items())
                if not held:  # nothing to renew: end; the next ``hold`` starts a thread
                    self._thread = None
                    return
            for trial_id, (token, lost) in held:
                if not renew(self._engine, trial_id, token, self._lease):
                    lost.set()
                    self.drop(trial_id, token)
