"""`hpsweep query`: every SQL type both backends return prints in every format, SQL is
sent as written (no bind parameters), and it can come from stdin or a file."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis

from coordinator.cli import main
from tests.support.configs import write_config
from tests.support.redis_lease import flush_besides_lease

pytestmark = pytest.mark.integration

FORMATS = ("table", "csv", "json")


def invoke(*args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), input=stdin)


@pytest.fixture
def launched(tmp_path: Path, db_url: str, redis_url: str) -> str:
    res = invoke("launch", str(write_config(tmp_path / "c.yaml")), "--db", db_url,
                 "--redis", redis_url)
    assert res.exit_code == 0, res.output
    flush_besides_lease(Redis.from_url(redis_url))  # only the database matters here
    return db_url


def query_json(db: str, sql: str) -> list[dict]:
    res = invoke("query", sql, "--db", db, "--format", "json")
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_a_colon_word_or_percent_inside_a_string_literal_is_just_text(launched) -> None:  # type: ignore[no-untyped-def]
    sql = "SELECT COUNT(*) AS n FROM sweeps WHERE config LIKE '%\"seed\": 0%'"
    assert query_json(launched, sql) == [{"n": 1}]
    sql = "SELECT 'a:b :name 100%' AS s, COUNT(*) AS n FROM trials WHERE status LIKE 'q%'"
    assert query_json(launched, sql) == [{"s": "a:b :name 100%", "n": 6}]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_common_type_prints_in_every_format(launched, fmt) -> None:  # type: ignore[no-untyped-def]
    sql = ("SELECT s.created_at, s.finished_at, d.data, t.best_val_acc, t.seed, s.name "
           "FROM sweeps s JOIN datasets d ON d.id = s.dataset_id "
           "JOIN trials t ON t.sweep_id = s.id WHERE t.idx = 0")
    res = invoke("query", sql, "--db", launched, "--format", fmt)
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output


def test_json_bytes_are_base64_and_null_is_null(launched) -> None:  # type: ignore[no-untyped-def]
    [row] = query_json(launched, "SELECT data, finished_at, n_rows FROM datasets, sweeps")
    assert row["finished_at"] is None
    assert len(base64.b64decode(row["data"])) > row["n_rows"]  # the stored npz, all of it


def test_postgresql_types_print_as_numbers_seconds_and_iso_dates(pg_url: str, redis_url: str,
                                                                 tmp_path: Path) -> None:
    res = invoke("launch", str(write_config(tmp_path / "c.yaml")), "--db", pg_url,
                 "--redis", redis_url)
    assert res.exit_code == 0, res.output
    sql = ("SELECT CAST(1.25 AS numeric) AS d, CAST(7 AS numeric) AS whole, "
           "interval '90 seconds' AS i, DATE '2024-01-02' AS day, "
           "TIMESTAMP '2024-01-02 03:04:05' AS ts, decode('00ff', 'hex') AS b, "
           "CAST(NULL AS text) AS nothing, ARRAY[1, 2] AS arr, "
           "now() - created_at AS age, CAST('NaN' AS numeric) AS nan FROM sweeps")
    [row] = query_json(pg_url, sql)
    assert row["d"] == 1.25 and row["whole"] == 7 and isinstance(row["whole"], int)
    assert row["i"] == 90.0 and isinstance(row["age"], float) and row["age"] >= 0
    assert row["day"] == "2024-01-02" and row["ts"] == "2024-01-02T03:04:05"
    assert base64.b64decode(row["b"]) == b"\x00\xff"
    assert row["nothing"] is None and row["arr"] == [1, 2] and row["nan"] is None
    out = invoke("query", sql, "--db", pg_url, "--format", "csv").output
    [got] = list(csv.DictReader(io.StringIO(out)))
    assert got["d"] == "1.25" and got["i"] == "90.0" and got["b"] == "AP8="
    assert got["nothing"] == "" and got["day"] == "2024-01-02"
    table = invoke("query", sql, "--db", pg_url)
    assert table.exit_code == 0 and "<2 bytes>" in table.output and "(1 row)" in table.output


def test_sql_from_stdin_and_from_a_file(launched, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sql = "SELECT COUNT(*) AS n\nFROM trials\nWHERE status = 'queued';\n"
    res = invoke("query", "-", "--db", launched, "--format", "json", stdin=sql)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == [{"n": 6}]
    (tmp_path / "q.sql").write_text("-- how many\n" + sql)
    res = invoke("query", "--file", str(tmp_path / "q.sql"), "--db", launched, "--format", "csv")
    assert res.output.splitlines() == ["n", "6"]


@pytest.mark.parametrize("args", [(), ("SELECT 1", "--file", "-")])
def test_query_needs_exactly_one_source_of_sql(launched, args) -> None:  # type: ignore[no-untyped-def]
    res = invoke("query", *args, "--db", launched)
    assert res.exit_code == 2 and "--file" in res.output


def test_a_write_from_stdin_is_refused_and_changes_nothing(launched) -> None:  # type: ignore[no-untyped-def]
    res = invoke("query", "-", "--db", launched, stdin="DELETE FROM trials")
    assert res.exit_code == 2 and "read-only" in res.output
    assert query_json(launched, "SELECT COUNT(*) AS n FROM trials") == [{"n": 6}]


def test_a_writing_cte_is_refused_by_the_read_only_connection(pg_url: str, redis_url: str,
                                                             tmp_path: Path) -> None:
    """WITH passes the statement check; the read-only transaction still refuses the write
    (the SQL now runs on a raw cursor: the connection's read-only setting must hold)."""
    res = invoke("launch", str(write_config(tmp_path / "c.yaml")), "--db", pg_url,
                 "--redis", redis_url)
    assert res.exit_code == 0, res.output
    res = invoke("query", "WITH gone AS (DELETE FROM trials RETURNING id) "
                          "SELECT COUNT(*) FROM gone", "--db", pg_url)
    assert res.exit_code == 2 and "read-only" in res.output, res.output
    assert query_json(pg_url, "SELECT COUNT(*) AS n FROM trials") == [{"n": 6}]
