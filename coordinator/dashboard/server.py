"""Run the dashboard: check the database and the binding, then serve on uvicorn."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, inspect, make_url

from coordinator.dashboard.guard import is_loopback
from storage.db import StorageError, make_engine, mask_url


class DashboardError(ValueError):
    """Bad input for the dashboard (exit 2): a missing database, an open binding."""


def dashboard_url(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={quote(token)}" if token else "")


def check_binding(host: str, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise DashboardError(
            f"--host {host} exposes the dashboard beyond this machine; give --token SECRET "
            "(or HPSWEEP_DASHBOARD_TOKEN) so that only people with the token can read it")


def open_database(db_url: str) -> Engine:
    """A read-only engine on an existing hpsweep database; creates nothing."""
    try:
        url = make_url(db_url)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises ArgumentError or ValueError
        raise DashboardError(f"not a database URL: {mask_url(db_url)!r} ({exc})") from None
    # connecting to SQLite would create a missing file: look first
    if url.get_backend_name() == "sqlite" and not _is_file(url.database):
        raise DashboardError(f"no SQLite database at {url.database or '(none)'}")
    engine = make_engine(db_url, readonly=True, create=False)
    try:
        has = inspect(engine).has_table("sweeps")
    except Exception as exc:  # noqa: BLE001 - any driver error: cannot read it
        raise StorageError(f"cannot read {mask_url(db_url)}: {exc}") from None
    if not has:
        raise DashboardError(f"{mask_url(db_url)} is not an hpsweep database (no sweeps table)")
    return engine


def _is_file(database: str | None) -> bool:
    return bool(database) and database != ":memory:" and Path(database).is_file()  # type: ignore[arg-type]


def serve(engine: Engine, host: str, port: int, token: str | None) -> None:
    """Serve ``engine`` (from ``open_database``) until interrupted (blocks)."""
    import uvicorn

    from coordinator.dashboard.app import create_app

    check_binding(host, token)
    config = uvicorn.Config(create_app(engine, token=token), host=host, port=port,
                            log_level="warning", access_log=False, server_header=False)
    uvicorn.Server(config).run()
