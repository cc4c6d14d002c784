"""Bulk loads: many plain rows at DB-API speed, for a launch of up to a million trials.

SQLAlchemy's executemany costs ~10 us of Python per row (parameter processing); a
launch of 1,000,000 trials writes 7,000,000 rows. Here rows are plain tuples handed to
the driver: SQLite's own ``executemany``, PostgreSQL's ``COPY … FROM STDIN``. Besides
``storage.db``, this is the only module that knows which dialect it talks to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.orm import Session

from storage.db import bind_of, is_sqlite


def new_ids(s: Session, table: Table, n: int) -> list[int]:
    """``n`` fresh primary keys for ``table``, to insert rows with explicit ids.

    SQLite: the ids after the largest one (a write transaction holds the database's only
    write lock, so nobody else takes them). PostgreSQL: ``n`` values of the column's
    sequence (other transactions may take the ones in between)."""
    if n <= 0:
        return []
    if is_sqlite(bind_of(s)):
        top = s.execute(text(f"SELECT COALESCE(MAX(id), 0) FROM {table.name}")).scalar_one()
        return list(range(top + 1, top + 1 + n))
    return list(s.scalars(text(
        f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) "
        "FROM generate_series(1, :n)"), {"n": n}))


def insert_rows(s: Session, table: Table, columns: Sequence[str],
                rows: Iterable[tuple[Any, ...]]) -> None:
    """INSERT ``rows`` (tuples in ``columns`` order) into ``table`` in the session's
    transaction. Column defaults set in Python by the models are not applied: give
    every column that needs a value."""
    raw = s.connection().connection  # the pooled DB-API connection of this transaction
    names = ", ".join(columns)
    if is_sqlite(bind_of(s)):
        marks = ", ".join("?" * len(columns))
        raw.cursor().executemany(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)
        return
    cur = raw.cursor()
    try:
        with cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    finally:
        cur.close()
