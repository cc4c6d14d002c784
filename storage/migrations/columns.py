"""Column steps the revisions share.

Databases written between 983bf27 and Alembic got nullable columns one by one from the
old ``_add_missing_columns``; they are stamped at the last revision they fully match, so a
later revision may find some of its columns already there and adds only the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa


def add_missing_columns(op: Any, table: str, columns: Iterable[sa.Column]) -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
    for column in columns:
        if column.name not in have:
            op.add_column(table, column.copy())


def drop_columns(op: Any, table: str, columns: Iterable[sa.Column]) -> None:
    with op.batch_alter_table(table) as batch:  # SQLite: copy-and-move
        for column in columns:
            batch.drop_column(column.name)
