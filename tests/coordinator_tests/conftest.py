"""Coordinator-test fixtures: a finished tiny sweep, built once per module, copied per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.coordinator_tests.finished_sweep import Template


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
             ) -> Template:
    """The module's finished sweep (built by a real worker on first use)."""
    return Template(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))


@pytest.fixture
def finished(template: Template, redis_url: str, tmp_path: Path) -> tuple[str, str]:
    """(database URL, sweep name) of this test's own copy of the module's finished sweep."""
    return template.copy(redis_url, tmp_path)
