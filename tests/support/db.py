"""Reading a test's database, and waiting for a condition: ``rows``/``scalar``, ``wait_for``,
and the checks every end-to-end test makes of a finished sweep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def wait_until(check: Callable[[], Any], timeout: float, what: str,
               on_timeout: Callable[[], str] = lambda: "") -> None:
    """``wait_for``, failing the test with ``what`` (and ``on_timeout()``, e.g. logs)."""
    if not wait_for(check, timeout, interval=0.2):
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n"
                             f"{on_timeout()}")


def observer(db_url: str) -> Engine:
    """A read-only engine for the test's own queries: never takes SQLite's write lock."""
    from storage.db import make_engine

    return make_engine(db_url, readonly=True)


def sweep_id_of(engine: Engine, name: str) -> int:
    return int(scalar(engine, "SELECT id FROM sweeps WHERE name = :n", n=name))


def epochs_recorded(engine: Engine, sweep_id: int) -> int:
    """Curve rows written so far for the sweep's trials."""
    return int(scalar(engine, "SELECT COUNT(*) FROM curves c JOIN trials t ON t.id = "
                              "c.trial_id WHERE t.sweep_id = :s", s=sweep_id))


def sweep_status(engine: Engine, sweep: int | str) -> str | None:
    """The status of the sweep with this id (int) or name (str); None if there is none."""
    column = "id" if isinstance(sweep, int) else "name"
    got = scalar(engine, f"SELECT status FROM sweeps WHERE {column} = :s", s=sweep)
    return None if got is None else str(got)


def assert_curves_complete(engine: Engine, sweep_id: int | None = None) -> None:
    """Every done trial has exactly one curve row per epoch, numbered 1..epochs."""
    where = "WHERE t.status = 'done'" + (f" AND t.sweep_id = {int(sweep_id)}" if sweep_id else "")
    bad = rows(engine, f"""
        SELECT t.id, t.epochs, COUNT(c.epoch), MIN(c.epoch), MAX(c.epoch)
        FROM trials t LEFT JOIN curves c ON c.trial_id = t.id {where}
        GROUP BY t.id, t.epochs
        HAVING COUNT(c.epoch) <> t.epochs OR MIN(c.epoch) <> 1 OR MAX(c.epoch) <> t.epochs""")
    assert bad == [], f"trials with incomplete or extra curve rows: {bad}"


def assert_sweep_complete(engine: Engine, name: str) -> None:
    """Sweep done; every trial done or diverged; done trials have rows for epochs 1..E,
    once each; a diverged one rows 1..k, the last the epoch that blew up."""
    (sweep_id, status), = rows(engine, "SELECT id, status FROM sweeps WHERE name = :n", n=name)
    assert status == "done"
    trials = rows(engine, "SELECT id, status, epochs FROM trials WHERE sweep_id = :s ORDER BY id",
                  s=sweep_id)
    assert trials
    assert {st for _, st, _ in trials} <= {"done", "diverged"}, trials
    assert_curves_complete(engine, sweep_id)
    for tid, st, epochs in trials:
        if st == "diverged":
            got = [e for (e,) in rows(engine, "SELECT epoch FROM curves WHERE trial_id = :t "
                                              "ORDER BY epoch", t=tid)]
            assert got == list(range(1, len(got) + 1)) and len(got) <= epochs, (tid, got)
