"""Read-only SQL for ``hpsweep query``.

Read-only by construction, twice over: the statement must be a single
SELECT / WITH / EXPLAIN / VALUES (checked before it runs), and it runs on a
connection that refuses writes (SQLite ``query_only``, PostgreSQL read-only
transaction) inside a transaction that is rolled back.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, StatementError

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
    body = check_read_only(sql)
    try:
        with engine.connect() as conn:
            result = conn.execute(text(body))
            columns = list(result.keys())
            rows = [tuple(r) for r in result.fetchall()]
            conn.rollback()
    except (DBAPIError, StatementError) as exc:
        msg = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise QueryError(f"SQL error: {msg}") from None
    return Rows(columns, rows)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, bytes | memoryview):
        return f"<{len(value)} bytes>"
    return str(value)


def format_table(rows: Rows, max_width: int = 40) -> str:
    cells = [[_cell(v)[:max_width] for v in r] for r in rows.rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(rows.columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(rows.columns, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    out.append(f"({len(rows.rows)} row{'s' if len(rows.rows) != 1 else ''})")
    return "\n".join(out)


def format_csv(rows: Rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(rows.columns)
    w.writerows([_cell(v) if isinstance(v, bytes | memoryview) else v for v in r]
                for r in rows.rows)
    return buf.getvalue()


def format_json(rows: Rows) -> str:
    def conv(v: Any) -> Any:
        if isinstance(v, bytes | memoryview):
            return f"<{len(v)} bytes>"
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if hasattr(v, "isoformat"):
            return v.isoformat()
        return v

    return json.dumps([{c: conv(v) for c, v in zip(rows.columns, r, strict=True)}
                       for r in rows.rows], indent=1)


FORMATTERS = {"table": format_table, "csv": format_csv, "json": format_json}
