"""``hpsweep dashboard`` over HTTP, a real server process: read-only, GET/HEAD only,
loopback unless a token is given, security headers, bad input refused, nothing
created on a missing or foreign database."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
from pathlib import Path

import pytest

from storage.db import make_engine
from tests.support.dashboard_server import dashboard, request, run_cli
from tests.support.db import rows
from tests.support.processes import ROOT
from tests.support.synthetic_sweep import build

pytestmark = pytest.mark.integration

PAGES = ["/", "/sweep/{s}", "/trial/{t}", "/api/sweeps", "/api/sweep/{s}",
         "/api/sweep/{s}/points", "/api/trial/{t}", "/api/curves?ids={t}",
         "/api/version", "/api/version?sweep={s}", "/api/version?trial={t}",
         "/static/echarts.min.js", "/static/sweep.js"]


@pytest.fixture
def sweep_db(db_url):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    sweep_id = build(engine, 200)
    trial_id = rows(engine, "SELECT min(id) FROM trials WHERE sweep_id = :s AND status = 'done'",
                    s=sweep_id)[0][0]
    engine.dispose()
    return db_url, sweep_id, trial_id


def _snapshot(db_url: str) -> object:
    """What a write would change: the SQLite file's bytes and its write-ahead log's
    content (any reader of a WAL database may leave an empty -wal and a -shm beside it),
    or every table's row count."""
    if db_url.startswith("sqlite"):
        path = Path(db_url.split("///", 1)[1])
        wal = path.with_name(path.name + "-wal")
        return (hashlib.sha256(path.read_bytes()).hexdigest(),
                wal.read_bytes() if wal.exists() else b"")
    engine = make_engine(db_url, readonly=True, create=False)
    try:
        return [rows(engine, f"SELECT count(*) FROM {t}")[0][0]
                for t in ("sweeps", "stages", "trials", "params", "curves", "checkpoints")]
    finally:
        engine.dispose()


def test_pages_and_endpoints_answer_and_nothing_writes(sweep_db) -> None:  # type: ignore[no-untyped-def]
    db_url, s, t = sweep_db
    before = _snapshot(db_url)
    with dashboard(db_url) as base:
        for path in PAGES:
            reply = request(base + path.format(s=s, t=t))
            assert reply.status == 200, (path, reply.body[:200])
            assert "script-src 'self';" in reply.headers["content-security-policy"]
            assert reply.headers["x-content-type-options"] == "nosniff"
            assert reply.headers["x-frame-options"] == "DENY"
            assert request(base + path.format(s=s, t=t), "HEAD").status == 200
        sweep = json.loads(request(f"{base}/api/sweep/{s}").body)
        assert sweep["sweep"]["name"] == "synthetic" and len(sweep["stages"]) == 3
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            for path in ("/", f"/api/sweep/{s}", "/api/sweeps", "/nowhere"):
                reply = request(base + path, method, data=b"{}" if method != "DELETE" else None)
                assert reply.status == 405, (method, path)
                assert reply.headers["allow"] == "GET, HEAD"
    assert _snapshot(db_url) == before


def test_bad_requests_are_refused(sweep_db) -> None:  # type: ignore[no-untyped-def]
    db_url, s, _ = sweep_db
    with dashboard(db_url) as base:
        assert request(f"{base}/api/sweep/999999").status == 404
        assert request(f"{base}/api/trial/999999").status == 404
        assert request(f"{base}/api/sweep/1%20OR%201=1").status == 404
        assert request(f"{base}/api/curves?ids=1;DROP%20TABLE%20trials").status == 400
        assert request(f"{base}/api/curves?ids=" + ",".join(["1"] * 21)).status == 400
        assert request(f"{base}/api/version?sweep=-1").status == 400
        assert request(f"{base}/static/../../pyproject.toml").status == 404
        # DNS rebinding: a page served as evil.example must not read a loopback dashboard
        assert request(f"{base}/api/sweeps", headers={"Host": "evil.example"}).status == 403
        assert request(f"{base}/api/sweeps", headers={"Host": "localhost:1"}).status == 200
        assert request(f"{base}/api/version?sweep={s}").status == 200


def test_token_is_required_on_every_request(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    build(engine, 20)
    engine.dispose()
    with dashboard(sqlite_url, "--token", "s3cret") as base:
        assert request(f"{base}/api/sweeps").status == 401
        assert request(f"{base}/").status == 401
        wrong = {"Cookie": "hpsweep_token=wrong"}
        assert request(f"{base}/api/sweeps", headers=wrong).status == 401
        first = request(f"{base}/sweep/1?token=s3cret")
        assert first.status == 303 and first.headers["location"] == "/sweep/1"
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert request(f"{base}/api/sweeps", headers={"Cookie": cookie.split(";")[0]}).status == 200
        assert request(f"{base}/api/sweeps",
                       headers={"Authorization": "Bearer s3cret"}).status == 200
        assert request(f"{base}/api/sweeps", "POST",
                       headers={"Authorization": "Bearer s3cret"}).status == 405


def test_open_binding_needs_a_token(sqlite_url: str) -> None:
    make_engine(sqlite_url).dispose()
    res = run_cli("--db", sqlite_url, "--host", "0.0.0.0", "--port", "1")
    assert res.returncode == 2
    assert "--token" in res.stderr and "Traceback" not in res.stderr


def test_bad_token_or_busy_port_is_refused(sqlite_url: str) -> None:
    make_engine(sqlite_url).dispose()
    res = run_cli("--db", sqlite_url, "--token", "a b;c=d")
    assert res.returncode == 2 and "--token may use" in res.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = run_cli("--db", sqlite_url, "--port", str(busy.getsockname()[1]))
    assert res.returncode == 1 and "cannot listen on 127.0.0.1:" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_or_foreign_database_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    res = run_cli("--db", f"sqlite:///{missing}", "--port", "1")
    assert res.returncode == 2 and "no such file" in res.stderr
    assert not missing.exists() and list(tmp_path.iterdir()) == []
    foreign = tmp_path / "other.db"
    sqlite3.connect(foreign).execute("CREATE TABLE notes (x)").connection.commit()
    res = run_cli("--db", f"sqlite:///{foreign}", "--port", "1")
    assert res.returncode == 2 and "not an hpsweep database" in res.stderr
    tables = sqlite3.connect(foreign).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("notes",)]


def test_json_never_carries_nan() -> None:
    from coordinator.dashboard.app import JSONResponse

    body = JSONResponse({"a": [1.5, float("nan"), float("-inf")], "b": "NaN"}).body
    assert json.loads(body) == {"a": [1.5, None, None], "b": "NaN"}


def test_static_assets_ship_in_the_package() -> None:
    """A non-editable install must carry the pages and the chart library."""
    import fnmatch
    import tomllib

    from coordinator.dashboard.app import STATIC

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["coordinator.dashboard"]
    files = [p.relative_to(STATIC.parent).as_posix() for p in STATIC.iterdir()]
    assert "static/echarts.min.js" in files and "static/sweep.html" in files
    assert all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files)
