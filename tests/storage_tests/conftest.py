"""Storage-test fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from storage.db import make_engine


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on each backend (the ``db_url`` fixture runs SQLite and PostgreSQL)."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()
