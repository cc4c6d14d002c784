"""Column steps the revisions share.

Databases written between 983bf27 and Alembic got nullable columns one by one from the
old ``_add_missing_columns``; they are stamped at the last revision they fully match, so a
later revision may find some of its columns already there and adds only the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa


def add_missing_columns(op: Any, table: str, columns: Mapping[str, Any]) -> None:
    """Add the nullable ``columns`` (name: type) that ``table`` lacks."""
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
    for name, kind in columns.items():
        if name not in have:
            op.add_column(table, sa.Column(name, kind))


def drop_columns(op: Any, table: str, columns: Mapping[str, Any]) -> None:
    with op.batch_alter_table(table) as batch:  # SQLite: copy-and-move
        for name in columns:
            batch.drop_column(name)
