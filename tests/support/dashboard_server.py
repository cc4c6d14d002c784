"""A real ``hpsweep dashboard`` process and plain HTTP to it (dashboard tests, benchmark)."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.support.processes import ROOT

START_TIMEOUT = 60.0  # a loaded 2-core box may take long to import and bind


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def request(url: str, method: str = "GET", headers: dict[str, str] | None = None,
            data: bytes | None = None) -> Reply:
    """One request, redirects not followed; any status comes back as a Reply."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with opener.open(req, timeout=30) as res:
            return Reply(res.status, {k.lower(): v for k, v in res.headers.items()}, res.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coordinator.cli", "dashboard", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


@contextmanager
def dashboard(db_url: str, *args: str) -> Iterator[str]:
    """``hpsweep dashboard --port 0`` (any free port, read from the URL it prints; the
    default host, loopback); yields its base URL, stops it after."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "dashboard", "--db", db_url, "--port", "0",
         *args],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = _printed_port(proc)
        assert proc.stderr is not None
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _printed_port(proc: subprocess.Popen[str]) -> int:
    """The port in the URL the command prints once it listens."""
    assert proc.stderr is not None
    deadline = time.monotonic() + START_TIMEOUT
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            seen.append(line)
            found = re.search(r"http://[^ ]*:(\d+)/", line)
            if found:
                return int(found.group(1))
            if line:
                continue
        if proc.poll() is not None:
            raise AssertionError(f"dashboard exited {proc.returncode}: {''.join(seen)[-2000:]}")
    raise AssertionError(f"dashboard printed no URL within {START_TIMEOUT}s: {''.join(seen)}")
