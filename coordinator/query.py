"""Read-only SQL for ``hpsweep query``.

Read-only by construction, twice over: the statement must be a single
SELECT / WITH / EXPLAIN / VALUES (checked before it runs), and it runs on a
connection that refuses writes (SQLite ``query_only``, PostgreSQL read-only
transaction) inside a transaction that is rolled back.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, StatementError

from coordinator.term import table

READ_ONLY_START = re.compile(r"^\s*(select|with|explain|values|pragma\s+table_info)\b", re.I)


class QueryError(ValueError):
    """The statement is not allowed or not valid SQL (exit 2)."""


@dataclass(frozen=True)
class Rows:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def _strip_comments(sql: str) -> str:
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.S)
    return re.sub(r"--[^\n]*", " ", sql)


def check_read_only(sql: str) -> str:
    """The statement without a trailing semicolon, or QueryError if it may write."""
    body = _strip_comments(sql).strip().rstrip(";").strip()
    if not body:
        raise QueryError("empty SQL statement")
    if ";" in body:
        raise QueryError("only one SQL statement is allowed")
    if not READ_ONLY_START.match(body):
        verb = body.split()[0].upper()
        raise QueryError(f"hpsweep query is read-only: {verb} statements are not allowed "
                         "(use SELECT or WITH)")
    return body


def run_query(engine: Engine, sql: str) -> Rows:
    """Run the statement as written, on a raw DB-API cursor with no parameters.

    No ``:name`` bind parameters (SQLAlchemy's ``text``) and no ``%`` placeholders
    (psycopg's, whenever parameters are passed): ``LIKE '%"seed": 0%'`` is just text.
    """
    body = check_read_only(sql)
    driver_error = engine.dialect.loaded_dbapi.Error
    try:
        with engine.connect() as conn:
            raw = conn.connection  # the pooled DB-API connection (read-only settings kept)
            cursor = raw.cursor()
            try:
                cursor.execute(body)
                columns = [d[0] for d in cursor.description or ()]
                rows = [tuple(r) for r in cursor.fetchall()] if cursor.description else []
            finally:
                cursor.close()
                raw.rollback()
    except (DBAPIError, StatementError, driver_error) as exc:
        msg = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise QueryError(f"SQL error: {msg}") from None
    return Rows(columns, rows)


# ------------------------------------------------------------------ values to text
# Every type SQLite and PostgreSQL return prints, the same way in every format:
# NULL -> empty (json: null), numeric/Decimal -> a number, interval -> seconds,
# date/time -> ISO 8601, bytes -> base64 (table: "<N bytes>"), NaN/inf -> null in json.


def plain(value: Any) -> Any:
    """``value`` as a JSON-ready Python value (see the rules above)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, list | tuple):  # PostgreSQL arrays
        return [plain(v) for v in value]
    if isinstance(value, dict):  # PostgreSQL json / jsonb
        return {str(k): plain(v) for k, v in value.items()}
    return str(value)  # uuid, inet, range, ...: their SQL text form


def _cell(value: Any) -> str:
    """A value as table or csv text."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    got = plain(value)
    if isinstance(got, list | dict):
        return json.dumps(got)
    return str(got)


def format_table(rows: Rows, max_width: int = 40) -> str:
    cells = [[_table_cell(v)[:max_width] for v in r] for r in rows.rows]
    n = len(rows.rows)
    return table(rows.columns, cells) + f"\n({n} row{'s' if n != 1 else ''})"


def _table_cell(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"  # a checkpoint's base64 would swamp the table
    return _cell(value)


def format_csv(rows: Rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(rows.columns)
    w.writerows([v if isinstance(v, float) else _cell(v) for v in r] for r in rows.rows)
    return buf.getvalue()


def format_json(rows: Rows) -> str:
    return json.dumps([{c: plain(v) for c, v in zip(rows.columns, r, strict=True)}
                       for r in rows.rows], indent=1)


FORMATTERS = {"table": format_table, "csv": format_csv, "json": format_json}
