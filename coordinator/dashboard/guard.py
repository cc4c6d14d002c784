"""The dashboard's safety net, one ASGI middleware in front of every route.

- Only GET and HEAD: anything else gets 405, whatever the path.
- Bound to loopback with no token: the Host header must name the loopback
  interface, so a page on another site cannot reach the dashboard by pointing
  its own host name at 127.0.0.1 (DNS rebinding).
- With a token: every request carries it, as the ``hpsweep_token`` cookie (set
  from ``?token=`` on the first visit, then the token leaves the address bar)
  or as ``Authorization: Bearer``.
- Security headers on every response: a CSP that allows only the dashboard's
  own scripts (no inline script, no eval), no framing, no sniffing, no referrer.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "hpsweep_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
       # ECharts positions its tooltips with inline style attributes
       "style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def host_name(header: str) -> str:
    """The host of a Host header without its port: ``[::1]:8765`` -> ``[::1]``."""
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0]


class Guard:
    """Wraps the app: refuses writes, checks host and token, adds headers."""

    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _plain(send, *refusal)
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if self.token and "token" in query:
            await self._set_cookie(scope, query, send)
            return
        await self.app(scope, receive, _with_headers(send, scope["path"]))

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, list] | None:
        if scope["method"] not in ("GET", "HEAD"):
            return 405, "read-only dashboard: only GET and HEAD", [(b"allow", b"GET, HEAD")]
        if self.token is None:
            if not is_loopback(host_name(headers.get("host", ""))):
                return 403, "this dashboard answers only to 127.0.0.1 / localhost", []
            return None
        if self._has_token(headers) or self._query_token_ok(scope):
            return None
        return 401, "token required: open the URL printed by `hpsweep dashboard`", []

    def _has_token(self, headers: dict[str, str]) -> bool:
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is just no token
            return False
        given = cookie[COOKIE].value if COOKIE in cookie else ""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        return self._matches(given)

    def _query_token_ok(self, scope: Scope) -> bool:
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        return self._matches(query.get("token", ""))

    def _matches(self, given: str) -> bool:
        assert self.token is not None
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    async def _set_cookie(self, scope: Scope, query: dict[str, str], send: Send) -> None:
        """First visit with ``?token=``: keep it in a cookie, drop it from the address."""
        rest = urlencode({k: v for k, v in query.items() if k != "token"})
        location = scope["path"] + (f"?{rest}" if rest else "")
        cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        await _plain(send, 303, "see other", [(b"location", location.encode("latin-1")),
                                               (b"set-cookie", cookie.encode("latin-1"))])


def _with_headers(send: Send, path: str) -> Any:
    # static assets may be revalidated (ETag); data and pages are never stored
    cache = b"no-cache" if path.startswith("/static/") else b"no-store"

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message.setdefault("headers", [])
            message["headers"] = [*message["headers"], *HEADERS, (b"cache-control", cache)]
        await send(message)

    return wrapped


async def _plain(send: Send, status: int, text: str, extra: list) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *HEADERS,
                            (b"cache-control", b"no-store"), *extra]})
    await send({"type": "http.response.body", "body": body})
