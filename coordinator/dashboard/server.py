"""Run the dashboard: check the database and the binding, then serve on uvicorn."""

from __future__ import annotations

import re
import socket
from urllib.parse import quote

from sqlalchemy import Engine

from coordinator.dashboard.guard import is_loopback


class DashboardError(ValueError):
    """Bad input for the dashboard (exit 2): a missing database, an open binding."""


def dashboard_url(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={quote(token)}" if token else "")


def check_binding(host: str, token: str | None) -> None:
    if token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{1,200}", token):
        raise DashboardError(
            "--token may use letters, digits and . _ ~ - only (it travels in URLs and a "
            "cookie); e.g. python -c 'import secrets; print(secrets.token_urlsafe())'")
    if not is_loopback(host) and not token:
        raise DashboardError(
            f"--host {host} exposes the dashboard beyond this machine; give --token SECRET "
            "(or HPSWEEP_DASHBOARD_TOKEN) so that only people with the token can read it")


class ListenError(RuntimeError):
    """The address cannot be listened on (in use, not this machine's): exit 1."""


def listen(host: str, port: int) -> socket.socket:
    """A bound socket for the server (port 0: any free one), or a ``ListenError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections made before the server runs wait in the backlog
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(engine: Engine, sock: socket.socket, token: str | None) -> None:
    """Serve ``engine`` (from ``open_database``) on ``sock`` (from ``listen``) until
    interrupted (blocks)."""
    import uvicorn

    from coordinator.dashboard.app import create_app

    config = uvicorn.Config(create_app(engine, token=token), log_level="warning",
                            access_log=False, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])
