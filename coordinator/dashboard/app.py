"""The Starlette application: three static pages, their JSON endpoints, assets.

Pages are static HTML (no server-side templating of user data); their scripts
fetch JSON and put every string into the page as text. Handlers are plain
functions (Starlette runs them in its thread pool) over a read-only engine.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from coordinator.dashboard import payload
from coordinator.dashboard.guard import Guard
from storage.dashboard import MAX_CURVES
from storage.db import mask_url

STATIC = Path(__file__).parent / "static"
VERSION_TTL = 0.25  # seconds one change token serves every viewer polling it


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        # a NaN or infinity would make the browser's JSON.parse fail: send null instead
        try:
            text = json.dumps(content, separators=(",", ":"), allow_nan=False, default=str)
        except ValueError:
            text = json.dumps(_finite(content), separators=(",", ":"), default=str)
        return text.encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _int_arg(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ValueError(f"{name} must be a non-negative integer")
    return int(raw)


class Endpoints:
    """The JSON endpoints over one engine, with a short cache for change tokens."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._versions: dict[tuple, tuple[float, Any]] = {}
        self._pages: dict[tuple, tuple[Any, bytes]] = {}
        self._lock = threading.Lock()

    def guarded(self, fn: Any) -> Any:
        def handler(request: Request) -> Response:
            try:
                return fn(request)
            except ValueError as exc:
                return _error(400, str(exc))
            except SQLAlchemyError as exc:
                text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[:1]
                return _error(503, f"database {mask_url(str(self.engine.url))}: "
                                   f"{text[0] if text else type(exc).__name__}")
        return handler

    def sweeps(self, request: Request) -> Response:
        return JSONResponse(payload.sweeps(self.engine))

    def sweep(self, request: Request) -> Response:
        sweep_id = request.path_params["sweep_id"]
        return self._per_version(("sweep", sweep_id), sweep_id,
                                 lambda: payload.sweep(self.engine, sweep_id), "no such sweep")

    def points(self, request: Request) -> Response:
        sweep_id = request.path_params["sweep_id"]
        return self._per_version(("points", sweep_id), sweep_id,
                                 lambda: payload.points(self.engine, sweep_id), "no such sweep")

    def _per_version(self, key: tuple, sweep_id: int, compute: Any, missing: str) -> Response:
        """A sweep's page data, computed once per change of the sweep: every viewer
        refetches when a trial finishes, the database answers once."""
        version = self._version((sweep_id, None))
        if version is None:
            return _error(404, missing)
        with self._lock:
            hit = self._pages.get(key)
        if hit is not None and hit[0] == version:
            return Response(hit[1], media_type="application/json")
        body = JSONResponse(compute()).body
        with self._lock:
            if len(self._pages) > 64:
                self._pages.clear()
            self._pages[key] = (version, body)
        return Response(body, media_type="application/json")

    def trial(self, request: Request) -> Response:
        found = payload.trial(self.engine, request.path_params["trial_id"])
        return JSONResponse(found) if found else _error(404, "no such trial")

    def curves(self, request: Request) -> Response:
        raw = request.query_params.get("ids", "")
        parts = [p for p in raw.split(",") if p]
        if len(parts) > MAX_CURVES or not all(p.isdigit() and len(p) < 19 for p in parts):
            raise ValueError(f"ids must be up to {MAX_CURVES} comma-separated trial ids")
        return JSONResponse(payload.curves(self.engine, [int(p) for p in parts]))

    def version(self, request: Request) -> Response:
        return JSONResponse({"version": self._version(
            (_int_arg(request, "sweep"), _int_arg(request, "trial")))})

    def _version(self, key: tuple[int | None, int | None]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._versions.get(key)
        if hit is None or now - hit[0] > VERSION_TTL:
            hit = (now, payload.version(self.engine, *key))
            with self._lock:
                if len(self._versions) > 1000:  # ids come from requests: bound the cache
                    self._versions.clear()
                self._versions[key] = hit
        return hit[1]


def _page(name: str) -> Any:
    def handler(request: Request) -> Response:
        return FileResponse(STATIC / name, media_type="text/html; charset=utf-8")
    return handler


def create_app(engine: Engine, token: str | None = None) -> Guard:
    """The dashboard over ``engine`` (open it read-only), behind ``Guard``."""
    api = Endpoints(engine)
    get = ["GET"]  # Starlette answers HEAD for GET routes
    routes = [
        Route("/", _page("sweeps.html"), methods=get),
        Route("/sweep/{sweep_id:int}", _page("sweep.html"), methods=get),
        Route("/trial/{trial_id:int}", _page("trial.html"), methods=get),
        Route("/api/sweeps", api.guarded(api.sweeps), methods=get),
        Route("/api/sweep/{sweep_id:int}", api.guarded(api.sweep), methods=get),
        Route("/api/sweep/{sweep_id:int}/points", api.guarded(api.points), methods=get),
        Route("/api/trial/{trial_id:int}", api.guarded(api.trial), methods=get),
        Route("/api/curves", api.guarded(api.curves), methods=get),
        Route("/api/version", api.guarded(api.version), methods=get),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Guard(Starlette(routes=routes), token=token)
