"""Counting a PostgreSQL server's connections while something runs (the PgBouncer tests and
``benchmarks/scale_workers.py``)."""

from __future__ import annotations

import threading

from tests.support.servers import pg_admin


class ConnectionSampler:
    """Counts rows of ``pg_stat_activity`` matching ``where`` every ``interval`` seconds on a
    thread: ``peak`` since the last ``reset()``, ``mean`` over the whole run."""

    def __init__(self, where: str, params: tuple[object, ...], interval: float = 0.005) -> None:
        self._sql, self._params = f"SELECT count(*) FROM pg_stat_activity WHERE {where}", params
        self._interval = interval
        self.peak, self.samples, self._sum = 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        admin, _ = pg_admin()
        if admin is None:
            raise ConnectionError("no PostgreSQL server at 127.0.0.1:5432")
        with admin:
            while not self._stop.wait(self._interval):
                (n,), = admin.execute(self._sql, self._params).fetchall()
                self.peak, self.samples, self._sum = max(self.peak, n), self.samples + 1, \
                    self._sum + n

    @property
    def mean(self) -> float:
        return self._sum / max(self.samples, 1)

    def reset(self) -> None:
        self.peak = 0
