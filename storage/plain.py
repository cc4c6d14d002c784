"""Plain DB-API reads for the looking commands (``status``, ``best``): no SQLAlchemy.

Importing SQLAlchemy and hpsweep's models costs ~0.35 s of CPU, more than a status
read of a 50,000-trial sweep takes in total. For the common case — a SQLite file given
as ``sqlite:///path``, or a PostgreSQL URL without query options — this module opens
the database with the driver itself (``sqlite3``, ``psycopg``), read-only, and runs
the same queries as ``storage.sweeps`` / ``storage.trials`` (same rows, same order,
same index use; ``tests/storage_tests/test_plain.py`` compares them on both backends).

``open_reader`` returns None whenever anything is unusual (another URL form, a missing
file, a network filesystem, a server that does not answer, not an hpsweep database):
the caller then takes the engine path, which gives the error its usual message and
exit code. Looking never writes: SQLite connections are ``query_only`` and opened
``mode=rw`` as the engine opens them (no file is created, WAL side files are removed
on close); PostgreSQL sessions are read-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections import namedtuple
from pathlib import Path
from typing import Any
from urllib.parse import quote

from storage.fs import NETWORK_FILESYSTEMS, filesystem_type

StoredBytes = namedtuple("StoredBytes", "checkpoints curves dataset")
SCHEMA_HEAD = "0004_flag_reason"  # storage.schema.head(); a test compares (no Alembic here)
CURVE_COLUMNS = 10  # the curves table's columns (storage.models.Curve); a test compares

CORE_TABLES = ("sweeps", "stages", "trials")  # as storage.meta: what makes a database ours
BUSY_TIMEOUT_S = 30.0  # as storage.sqlite.BUSY_TIMEOUT_MS
FINAL = ("done", "pruned", "diverged", "failed", "cancelled")  # as FINAL_TRIAL_STATUSES

# The attribute names of storage.sweeps.SweepInfo / StageInfo / FlagRow and
# storage.trials.TrialRow, so report code reads either kind of row
SweepRow = namedtuple("SweepRow", "id name status config dataset_sha seed queue n_stages "
                                  "max_attempts")
StageRow = namedtuple("StageRow", "id sweep_id idx epochs n_trials status kind quorum")
FlagRow = namedtuple("FlagRow", "param value low high side at_limit scale limit reason")
TrialRow = namedtuple("TrialRow", "id sweep_id stage_id stage_idx idx status seed epochs "
                                  "best_val_acc best_val_loss best_epoch attempts worker "
                                  "error parent_id params")

_SWEEP = ("SELECT s.id, s.name, s.status, s.config, d.sha256, s.seed, s.queue, s.n_stages, "
          "s.max_attempts FROM sweeps s JOIN datasets d ON d.id = s.dataset_id WHERE ")
_TRIAL = ("SELECT t.id, t.sweep_id, t.stage_id, st.idx, t.idx, t.status, t.seed, t.epochs, "
          "t.best_val_acc, t.best_val_loss, t.best_epoch, t.attempts, t.worker, t.error, "
          "t.parent_id FROM trials t JOIN stages st ON st.id = t.stage_id "
          "WHERE t.sweep_id = ? AND t.status = 'done' AND t.best_val_acc IS NOT NULL ")
# storage.trials.best_trials' order (coordinator.rank's): acc down, loss up (none last), id
_RANKED = ("ORDER BY t.best_val_acc DESC, t.best_val_loss IS NULL, t.best_val_loss ASC, "
           "t.id ASC LIMIT ?")


class Reader:
    """One read-only connection; methods named and shaped as the storage functions."""

    def __init__(self, conn: Any, postgres: bool) -> None:
        self._conn = conn
        self._pg = postgres

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.rollback()  # nothing was written; ends PostgreSQL's transaction
        self._conn.close()

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._pg:
            sql = sql.replace("?", "%s")
        cur = self._conn.cursor()
        try:
            cur.execute(sql, params)
            return list(cur.fetchall())
        finally:
            cur.close()

    def tables(self) -> set[str]:
        if self._pg:
            sql = ("SELECT table_name FROM information_schema.tables "
                   "WHERE table_schema = current_schema()")
        else:
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        return {r[0] for r in self._rows(sql)}

    def at_head(self) -> bool:
        """The database is hpsweep's at the schema revision this code reads (anything else
        goes the engine path, which upgrades nothing here and says what to run)."""
        if not set(CORE_TABLES) | {"alembic_version"} <= self.tables():
            return False
        return self._rows("SELECT version_num FROM alembic_version") == [(SCHEMA_HEAD,)]

    # ------------------------------------------------------------- storage.sweeps

    def get_sweep(self, name_or_id: str | int) -> SweepRow | None:
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            hit = self._rows(_SWEEP + "s.id = ?", (int(name_or_id),))
            if hit:
                return _sweep_row(hit[0])
        hit = self._rows(_SWEEP + "s.name = ?", (str(name_or_id),))
        return _sweep_row(hit[0]) if hit else None

    def latest_sweep(self) -> SweepRow | None:
        sweep_id = self._rows("SELECT max(id) FROM sweeps")[0][0]
        return self.get_sweep(sweep_id) if sweep_id is not None else None

    def stages_of(self, sweep_id: int) -> list[StageRow]:
        rows = self._rows("SELECT id, sweep_id, idx, epochs, n_trials, status, kind, quorum "
                          "FROM stages WHERE sweep_id = ? ORDER BY idx", (sweep_id,))
        return [StageRow(*r) for r in rows]

    def stage_ranges(self, stage_id: int) -> dict[str, dict[str, Any]]:
        rows = self._rows("SELECT param, low, high, scale, integer, choices FROM stage_ranges "
                          "WHERE stage_id = ? ORDER BY param", (stage_id,))
        return {p: {"low": lo, "high": hi, "scale": sc,
                    "integer": None if whole is None else bool(whole), "choices": ch}
                for p, lo, hi, sc, whole, ch in rows}

    def flags_of(self, sweep_id: int) -> list[tuple[int, FlagRow]]:
        rows = self._rows(
            "SELECT st.idx, f.param, f.value, f.low, f.high, f.side, f.at_limit, f.scale, "
            "f.hard_limit, f.reason FROM boundary_flags f JOIN stages st ON st.id = f.stage_id "
            "WHERE f.sweep_id = ? ORDER BY st.idx, f.param", (sweep_id,))
        return [(idx, FlagRow(p, v, lo, hi, side, bool(at), sc, lim or "", why or ""))
                for idx, p, v, lo, hi, side, at, sc, lim, why in rows]

    def chance_of(self, sweep_id: int) -> tuple[bool, float] | None:
        rows = self._rows("SELECT at_chance, chance_acc FROM stages WHERE sweep_id = ? AND "
                          "at_chance IS NOT NULL AND kind = 'search' ORDER BY idx DESC LIMIT 1",
                          (sweep_id,))
        return (bool(rows[0][0]), float(rows[0][1])) if rows else None

    # ------------------------------------------------------------- storage.trials

    def status_counts(self, sweep_id: int) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {}
        rows = self._rows("SELECT stage_id, status, count(*) FROM trials WHERE stage_id IN "
                          "(SELECT id FROM stages WHERE sweep_id = ?) GROUP BY stage_id, status",
                          (sweep_id,))
        for stage_id, status, n in rows:
            out.setdefault(stage_id, {})[status] = n
        return out

    def stored_bytes(self, sweep_id: int) -> StoredBytes:
        """``storage.retention.stored_bytes``'s twin (sizes only; curves at 8 bytes a value)."""
        (ck, n_curves), = self._rows(
            "SELECT (SELECT coalesce(sum(length(data)), 0) FROM checkpoints WHERE trial_id IN "
            "(SELECT id FROM trials WHERE sweep_id = ?)), (SELECT count(*) FROM curves WHERE "
            "trial_id IN (SELECT id FROM trials WHERE sweep_id = ?))", (sweep_id, sweep_id))
        ds = self._rows("SELECT coalesce(length(d.data), 0) FROM datasets d JOIN sweeps s ON "
                        "s.dataset_id = d.id WHERE s.id = ?", (sweep_id,))
        return StoredBytes(int(ck), int(n_curves) * 8 * CURVE_COLUMNS, int(ds[0][0]) if ds else 0)

    def best_score(self, sweep_id: int) -> float | None:
        return self._rows("SELECT max(best_val_acc) FROM trials WHERE sweep_id = ? AND "
                          "status = 'done'", (sweep_id,))[0][0]

    def best_trials(self, sweep_id: int, stage_id: int | None = None,
                    limit: int = 1) -> list[TrialRow]:
        if stage_id is None:
            rows = self._rows(_TRIAL + _RANKED, (sweep_id, limit))
        else:
            rows = self._rows(_TRIAL + "AND t.stage_id = ? " + _RANKED, (sweep_id, stage_id,
                                                                        limit))
        params = self.trial_params([r[0] for r in rows])
        return [TrialRow(*r, params[r[0]]) for r in rows]

    def trial_params(self, trial_ids: list[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {t: {} for t in trial_ids}
        if not trial_ids:
            return out
        marks = ", ".join("?" * len(trial_ids))
        for trial_id, name, value, text in self._rows(
                f"SELECT trial_id, name, value, value_text FROM params WHERE trial_id IN "
                f"({marks})", tuple(trial_ids)):
            out[trial_id][name] = _param_value(value, text)
        return out

    @staticmethod
    def is_final(status: str) -> bool:
        return status in FINAL


def _sweep_row(r: tuple[Any, ...]) -> SweepRow:
    return SweepRow(r[0], r[1], r[2], json.loads(r[3]), *r[4:])


def _param_value(value: float | None, value_text: str | None) -> Any:
    """As storage.sweeps.param_value."""
    if value_text is None:
        return value
    return json.loads(value_text) if value_text.startswith("[") else value_text


def open_reader(url: str) -> Reader | None:
    """A read-only ``Reader`` on ``url``, or None when the engine path must handle it."""
    if os.environ.get("HPSWEEP_PLAIN_READS") == "0":
        return None  # benchmarks/commands.py --engine-path: the SQLAlchemy path, to compare
    reader = None
    try:
        if url.startswith("sqlite:///"):
            reader = _sqlite_reader(url[len("sqlite:///"):])
        elif url.startswith(("postgresql+psycopg://", "postgresql://")):
            reader = _postgres_reader("postgresql://" + url.split("://", 1)[1])
        if reader is not None and reader.at_head():
            return reader
    except Exception:  # noqa: BLE001 - any trouble: the engine path reports it properly
        pass
    if reader is not None:
        with contextlib.suppress(Exception):
            reader.close()
    return None


def _sqlite_reader(database: str) -> Reader | None:
    if not database or database == ":memory:" or any(c in database for c in "?%#"):
        return None
    path = Path(database).expanduser().absolute()
    if not path.is_file() or filesystem_type(path.parent) in NETWORK_FILESYSTEMS:
        return None
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S)
    conn.execute("PRAGMA query_only = ON")
    return Reader(conn, postgres=False)


def _postgres_reader(conninfo: str) -> Reader | None:
    if "?" in conninfo or os.environ.get("PGOPTIONS"):
        return None  # query options (PgBouncer, sslmode...) are the engine's to interpret
    import psycopg  # only PostgreSQL users pay for the driver

    conn = psycopg.connect(conninfo, connect_timeout=5, options=(
        "-c default_transaction_read_only=on -c idle_in_transaction_session_timeout=60000"))
    return Reader(conn, postgres=True)
