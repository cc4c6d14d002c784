"""The periodic reconcile pass: one per period per database, whichever worker takes it."""

from __future__ import annotations

import time

from redis import Redis

from worker import queue as q

FP_A, FP_B = "a" * 32, "b" * 32


def test_one_turn_per_period_per_database(redis_url: str) -> None:
    conn = Redis.from_url(redis_url)
    assert q.reconcile_turn(conn, FP_A, 30.0)
    # the other workers of that database, asking within the period, leave the pass to it
    assert [q.reconcile_turn(conn, FP_A, 30.0) for _ in range(5)] == [False] * 5
    # another database sharing the Redis database, or workers with another period, have
    # turns of their own
    assert q.reconcile_turn(conn, FP_B, 30.0)
    assert q.reconcile_turn(conn, FP_A, 20.0)


def test_the_turn_comes_back_after_the_period(redis_url: str) -> None:
    """A worker that took the turn and died never blocks the passes for longer than one
    period: the turn expires with it."""
    conn = Redis.from_url(redis_url)
    assert q.reconcile_turn(conn, FP_A, 0.2)
    assert not q.reconcile_turn(conn, FP_A, 0.2)
    deadline = time.monotonic() + 30  # generous on a loaded machine; usually 0.2 s
    while not q.reconcile_turn(conn, FP_A, 0.2):
        assert time.monotonic() < deadline, "the reconcile turn never expired"
        time.sleep(0.02)
    ttl = conn.pttl(f"hpsweep:reconcile:{FP_A}:200")
    assert 0 < ttl <= 200
