"""worker/lease.py: one keeper renews the leases it holds, tells an attempt that lost its
lease, and leaves no thread behind once nothing is held (real SQLite database)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine

from storage import attempts
from storage.db import make_engine, transact
from tests.storage_tests.test_trials import make_sweep
from tests.support.db import rows, scalar, wait_for
from worker.lease import LeaseKeeper

pytestmark = pytest.mark.integration

LEASE = 1.5  # the keeper renews every LEASE / 3 seconds


@pytest.fixture
def engine(sqlite_url: str):  # type: ignore[no-untyped-def]
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


def claimed(engine: Engine, n: int) -> list[int]:
    _, _, ids = make_sweep(engine, n_trials=n)
    for tid in ids:
        assert transact(engine, lambda s, t=tid: attempts.claim(
            s, engine, t, f"token-{t}", "w", LEASE)) is not None
    return ids


def expiry(engine: Engine, tid: int) -> float:
    return float(scalar(engine, "SELECT lease_expires FROM trials WHERE id = :i", i=tid))


def test_one_thread_renews_every_held_lease_and_ends_when_none_is_held(engine: Engine) -> None:
    ids = claimed(engine, 2)
    first = {tid: expiry(engine, tid) for tid in ids}
    keeper = LeaseKeeper(engine, LEASE)
    before = set(threading.enumerate())
    with keeper.holding(ids[0], f"token-{ids[0]}") as lost0, \
            keeper.holding(ids[1], f"token-{ids[1]}") as lost1:
        started = set(threading.enumerate()) - before
        assert [t.name for t in started] == ["lease-keeper"]  # one renewer for both
        assert wait_for(lambda: all(expiry(engine, t) > first[t] for t in ids), timeout=60)
        assert not lost0.is_set() and not lost1.is_set()
    assert wait_for(lambda: not any(t.is_alive() for t in started), timeout=60)
    assert rows(engine, "SELECT status, lease_token FROM trials ORDER BY id") == [
        ("running", f"token-{t}") for t in ids]


def test_a_lease_taken_over_is_reported_lost_while_the_others_are_renewed(engine: Engine) -> None:
    ids = claimed(engine, 2)
    keeper = LeaseKeeper(engine, LEASE)
    with keeper.holding(ids[0], f"token-{ids[0]}") as lost, \
            keeper.holding(ids[1], f"token-{ids[1]}") as kept:
        # another attempt took trial 0 over (as a claim after its lease expired does)
        transact(engine, lambda s: attempts.release(s, engine, ids[0], f"token-{ids[0]}",
                                                    "taken"))
        assert wait_for(lost.is_set, timeout=60)
        renewed = expiry(engine, ids[1])
        assert wait_for(lambda: expiry(engine, ids[1]) > renewed, timeout=60)
        assert not kept.is_set()
    assert rows(engine, "SELECT status, lease_token FROM trials WHERE id = :i", i=ids[0]) == [
        ("queued", None)]
