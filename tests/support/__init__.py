"""Test support shared by the tests and the benchmarks (which import it, never conftest).

- ``db``: ``rows``/``scalar``, ``wait_for``/``wait_until``, checks of a finished sweep;
- ``processes``: ``WorkerProc`` (one ``hpsweep worker``), ``Fleet`` (a test's workers),
  ``Host`` (a simulated machine), ``launch``/``run_hpsweep`` as a user runs them;
- ``servers``: a private ``RedisServer`` (optional password), the shared Redis and
  PostgreSQL, ``postgres_db`` (a fresh database, dropped after);
- ``configs``: ``write_config`` with presets, ``write_blobs`` datasets;
- ``reference``: the chaos-free reference run the fault tests compare curves with;
- ``redis_lease``, ``pgbouncer``, ``pg_activity``, ``dashboard_server``, ``synthetic_sweep``.
"""
