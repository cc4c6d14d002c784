"""``hpsweep export``: one row per trial, one column per parameter, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from coordinator.export import param_columns
from storage.db import make_engine
from tests.coordinator_tests.finished_sweep import TINY, cli
from tests.support.db import rows

pytestmark = pytest.mark.integration


def db_trials(db: str) -> dict[int, tuple]:
    return {r[0]: r[1:] for r in rows(make_engine(db), "SELECT t.id, st.idx, t.status, t.epochs, "
                                      "t.best_val_acc FROM trials t JOIN stages st "
                                      "ON st.id = t.stage_id")}


def test_csv_has_one_row_per_trial_and_a_column_per_parameter(finished: tuple[str, str]) -> None:
    db, name = finished
    res = cli("export", name, "--format", "csv", "--db", db)
    assert res.exit_code == 0, res.output
    reader = csv.DictReader(io.StringIO(res.output))
    got = list(reader)
    trials = db_trials(db)
    assert sorted(int(r["id"]) for r in got) == sorted(trials) and len(got) == len(trials)
    searched = sorted(TINY["space"])  # the stored config keeps them sorted
    assert reader.fieldnames[:6] == ["id", "stage", "status", "epochs", "best_val_acc",
                                     "best_epoch"]
    assert reader.fieldnames[6:6 + len(searched)] == searched
    assert {"batch_size", "update_rule", "ema_decay"} <= set(reader.fieldnames)
    lr = dict(rows(make_engine(db), "SELECT trial_id, value FROM params "
                                    "WHERE name = 'learning_rate'"))
    for r in got:
        stage, status, epochs, best = trials[int(r["id"])]
        assert (int(r["stage"]), r["status"], int(r["epochs"])) == (stage, status, epochs)
        assert float(r["learning_rate"]) == lr[int(r["id"])]
        assert r["hidden_size"].isdigit()  # integers stay integers
        assert r["update_rule"] == "adam"
        if best is not None:
            assert float(r["best_val_acc"]) == best


def test_json_matches_csv(finished: tuple[str, str], tmp_path: Path) -> None:
    db, name = finished
    out = tmp_path / "trials.json"
    res = cli("export", name, "--format", "json", "--output", str(out), "--db", db)
    assert res.exit_code == 0 and res.output == ""
    data = json.loads(out.read_text())
    as_csv = list(csv.DictReader(io.StringIO(cli("export", name, "--db", db).output)))
    assert len(data) == len(as_csv) == len(db_trials(db))
    assert [d["id"] for d in data] == [int(r["id"]) for r in as_csv]
    assert all(isinstance(d["learning_rate"], float) and isinstance(d["hidden_size"], int)
               for d in data)


def test_param_columns_put_searched_first() -> None:
    assert param_columns(["reg", "learning_rate"], [{"reg": 1, "depth": 1, "batch_size": 2},
                                                    {"learning_rate": 1, "a": 0}]) == [
        "reg", "learning_rate", "a", "batch_size", "depth"]


def test_unknown_sweep_is_bad_input(finished: tuple[str, str]) -> None:
    db, _ = finished
    res = cli("export", "no-such-sweep", "--db", db)
    assert res.exit_code == 2 and "no sweep named" in res.output
