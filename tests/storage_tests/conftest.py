"""Storage-test fixtures."""

from __future__ import annotations

import pytest

from storage.db import make_engine


@pytest.fixture
def engine(db_url):  # type: ignore[no-untyped-def]
    """An engine on each backend (the ``db_url`` fixture runs SQLite and PostgreSQL)."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()
