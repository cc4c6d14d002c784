"""Issue 12 through the database: flags from a stage's own trials, ranges that travel,
the chance-level warning (recorded in SQL, printed by ``status`` and ``best``), messages
that fit the range, and old databases that gain the new columns (from writers only)."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from coordinator.cli import main
from coordinator.config import load_config
from coordinator.launch import create_sweep, prepare_dataset
from coordinator.stages import advance
from storage.db import make_engine, transact
from storage.sweeps import trial_ids_by_idx
from tests.support.configs import write_config
from tests.support.db import rows, scalar

pytestmark = pytest.mark.integration

SPACE = {"learning_rate": {"dist": "log_uniform", "low": 1e-9, "high": 1e-7},
         "reg": {"dist": "log_uniform", "low": 1e-6, "high": 1e-2}}


def cli(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def make(tmp_path, db_url, stages, space=SPACE, **top):  # type: ignore[no-untyped-def]
    cfg = load_config(write_config(tmp_path / "c.yaml", space=space, stages=stages, **top))
    engine = make_engine(db_url)
    made = create_sweep(engine, cfg, "q", prepare_dataset(cfg))
    return engine, made.sweep_id, made.name


def stage_id(engine: Engine, sweep_id: int, idx: int) -> int:
    return scalar(engine, "SELECT id FROM stages WHERE sweep_id = :s AND idx = :i",
                  s=sweep_id, i=idx)


def score(engine, sweep_id: int, idx: int, acc) -> None:  # type: ignore[no-untyped-def]
    """Finish every trial of stage ``idx``: ``acc(lr)`` gives its accuracy (None:
    diverged); the validation loss falls as the rate rises, as it does at chance."""
    sid = stage_id(engine, sweep_id, idx)
    trials = rows(engine, "SELECT t.id, p.value FROM trials t JOIN params p ON "
                          "p.trial_id = t.id AND p.name = 'learning_rate' "
                          "WHERE t.stage_id = :s", s=sid)
    with engine.begin() as conn:
        for tid, lr in trials:
            a = acc(lr)
            conn.execute(text("UPDATE trials SET status = :st, best_val_acc = :a, "
                              "best_val_loss = :l WHERE id = :t"),
                         {"st": "diverged" if a is None else "done", "a": a,
                          "l": None if a is None else 2.3 - 0.01 * math.log10(lr), "t": tid})
    advance(engine, sid)


def at_chance(lr: float) -> float:
    return 0.1


def test_a_sweep_at_chance_travels_records_it_and_warns(tmp_path, db_url):  # type: ignore[no-untyped-def]
    engine, sweep_id, name = make(tmp_path, db_url, [{"trials": 8, "epochs": 1},
                                                     {"trials": 8, "epochs": 1},
                                                     {"trials": 4, "epochs": 1}])
    score(engine, sweep_id, 0, at_chance)
    score(engine, sweep_id, 1, at_chance)
    lr = rows(engine, "SELECT s.idx, r.low, r.high FROM stage_ranges r JOIN stages s ON "
                      "s.id = r.stage_id WHERE r.param = 'learning_rate' ORDER BY s.idx")
    # stage 1 leaves 1e-9..1e-7 behind by >= 3 decades; stage 2, flagged again, twice that
    assert lr[1][2] >= 1e-4 * 0.999 and lr[1][1] < 1e-7
    assert math.log10(lr[2][2]) >= math.log10(lr[1][2]) + 6 - 1e-6
    reg = rows(engine, "SELECT r.low, r.high FROM stage_ranges r JOIN stages s ON "
                       "s.id = r.stage_id WHERE r.param = 'reg' ORDER BY s.idx")
    assert reg[0] == reg[1] == reg[2]  # at chance nothing else narrows on noise
    assert rows(engine, "SELECT idx, at_chance FROM stages ORDER BY idx")[:2] == [
        (0, True), (1, True)]
    assert rows(engine, "SELECT s.idx, f.param, f.side, f.reason FROM boundary_flags f JOIN "
                        "stages s ON s.id = f.stage_id ORDER BY s.idx") == [
        (0, "learning_rate", "high", "trend"), (1, "learning_rate", "high", "trend")]
    status = cli("status", name, "--db", db_url)
    assert status.exit_code == 0
    assert "NO TRIAL BEATS CHANCE" in status.output and "stages.at_chance" in status.output
    assert "stage 1 extended the range to [" in status.output
    best = cli("best", name, "--db", db_url)
    assert best.exit_code == 0 and "warning: NO TRIAL BEATS CHANCE" in best.output


def test_no_warning_once_a_trial_beats_chance(tmp_path, db_url):  # type: ignore[no-untyped-def]
    engine, sweep_id, name = make(tmp_path, db_url, [{"trials": 6, "epochs": 1}])
    score(engine, sweep_id, 0, lambda lr: 0.5)
    assert scalar(engine, "SELECT at_chance FROM stages") in (False, 0)
    assert "CHANCE" not in cli("status", name, "--db", db_url).output


def test_every_trial_diverged_moves_the_rate_down(tmp_path, sqlite_url):  # type: ignore[no-untyped-def]
    space = {**SPACE, "learning_rate": {"dist": "log_uniform", "low": 1e2, "high": 1e4}}
    engine, sweep_id, name = make(tmp_path, sqlite_url, [{"trials": 6, "epochs": 1},
                                                         {"trials": 4, "epochs": 1}], space)
    score(engine, sweep_id, 0, lambda lr: None)
    low, high = rows(engine, "SELECT r.low, r.high FROM stage_ranges r JOIN stages s ON "
                             "s.id = r.stage_id WHERE r.param = 'learning_rate' AND s.idx = 1")[0]
    assert low <= 1e-1 * 1.001 and high < 1e3
    out = cli("status", name, "--db", sqlite_url).output
    assert "learning_rate: every trial diverged in [1e+02, 1e+04]" in out
    assert "NO TRIAL BEATS CHANCE: no trial finished with a score" in out


def test_carried_trials_are_reported_as_carried_not_at_an_edge(tmp_path, sqlite_url):  # type: ignore[no-untyped-def]
    """The issue's case: a carried trial from a wider range is the best of the next stage;
    the old report called it 'at the low edge' of a range it was never drawn from."""
    space = {**SPACE, "learning_rate": {"dist": "log_uniform", "low": 1e-5, "high": 1.0}}
    engine, sweep_id, name = make(tmp_path, sqlite_url, [
        {"trials": 12, "epochs": 1, "carry": 1}, {"trials": 6, "epochs": 1}], space)
    # a bowl around 1e-2: the carried best (the closest to it) ends up outside stage 1's range
    score(engine, sweep_id, 0, lambda lr: 0.9 - 0.1 * (math.log10(lr) + 2) ** 2)
    sid = stage_id(engine, sweep_id, 1)
    with engine.begin() as conn:  # the carried trial stays the best; the rest trend nowhere
        conn.execute(text("UPDATE trials SET status = 'done', best_val_loss = 1.0, "
                          "best_val_acc = CASE WHEN parent_id IS NULL THEN 0.5 + 0.01 * "
                          "((idx * 7) % 5) ELSE 0.99 END WHERE stage_id = :s"), {"s": sid})
        # and lies below the stage's range
        conn.execute(text("UPDATE params SET value = 1e-6 WHERE name = 'learning_rate' AND "
                          "trial_id = (SELECT id FROM trials WHERE stage_id = :s AND "
                          "parent_id IS NOT NULL)"), {"s": sid})
    advance(engine, sid)
    assert scalar(engine, "SELECT COUNT(*) FROM boundary_flags WHERE stage_id = :s AND "
                          "param = 'learning_rate'", s=sid) == 0
    out = cli("status", name, "--db", sqlite_url).output
    assert "(carried from stage 0)" in out
    assert "stage 1: learning_rate" not in out


def test_flag_messages_fit_the_range(tmp_path, sqlite_url):  # type: ignore[no-untyped-def]
    """A user's range: widen it. A derived range on the last stage: say what hpsweep did
    and what is left to do. Integers print as integers."""
    space = {"learning_rate": {"dist": "log_uniform", "low": 1e-3, "high": 1e-1},
             "hidden_size": {"dist": "int_log_uniform", "low": 16, "high": 512}}
    engine, sweep_id, name = make(tmp_path, sqlite_url, [{"trials": 12, "epochs": 1},
                                                         {"trials": 8, "epochs": 1}], space,
                                  train={"depth": 1, "update_rule": "sgd"})
    score(engine, sweep_id, 0, lambda lr: 0.2 + 0.1 * (math.log10(lr) + 3))
    score(engine, sweep_id, 1, lambda lr: 0.2 + 0.1 * (math.log10(lr) + 3))
    out = cli("status", name, "--db", sqlite_url).output
    assert "stage 0: learning_rate: scores rise towards the high edge of [1e-03, 1e-01]" in out
    assert "stage 1 extended the range to [" in out
    assert "stage 1: learning_rate: " in out
    assert f"this was the last stage: `hpsweep extend {name}` adds a stage" in out
    assert "widen the range" not in out.split("stage 1: learning_rate")[1]
    assert "hidden_size      [" in out and "e+0" not in out.split("hidden_size")[1].split("\n")[0]
    # the dashboard says the same
    from coordinator.dashboard.payload import sweep as sweep_payload

    messages = [f["message"] for f in sweep_payload(engine, sweep_id)["flags"]]
    assert any("stage 1 extended the range to [" in m for m in messages)
    assert any(f"`hpsweep extend {name}`" in m for m in messages)
    assert not any("widen the range" in m for m in messages)


def test_single_stage_user_range_says_widen(tmp_path, sqlite_url):  # type: ignore[no-untyped-def]
    engine, sweep_id, name = make(tmp_path, sqlite_url, [{"trials": 8, "epochs": 1}])
    score(engine, sweep_id, 0, lambda lr: 0.2 + 0.01 * (math.log10(lr) + 9))
    out = cli("best", name, "--db", sqlite_url).output
    assert "the optimum may lie above; widen the range in the config" in out


def drop_new_columns(db_url: str) -> None:
    """Make the database look like one from before issue 12 (and before Alembic)."""
    engine = make_engine(db_url)
    with engine.begin() as conn:
        for table, column in NEW_COLUMNS:
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()


NEW_COLUMNS = (("stages", "at_chance"), ("stages", "chance_acc"), ("boundary_flags", "reason"))


def test_old_databases_gain_the_new_columns(tmp_path, db_url):  # type: ignore[no-untyped-def]
    make_engine(db_url).dispose()
    drop_new_columns(db_url)
    engine, sweep_id, _ = make(tmp_path, db_url, [{"trials": 6, "epochs": 1}])
    score(engine, sweep_id, 0, at_chance)
    assert scalar(engine, "SELECT at_chance FROM stages") in (True, 1)


def test_old_databases_are_refused_by_readers_without_writing(
        tmp_path, db_url):  # type: ignore[no-untyped-def]
    """status and best on a database from before these columns exit 2, say what to run,
    and add nothing (looking never writes)."""
    engine, sweep_id, name = make(tmp_path, db_url, [{"trials": 8, "epochs": 1}])
    score(engine, sweep_id, 0, lambda lr: 0.2 + 0.01 * (math.log10(lr) + 9))
    engine.dispose()
    drop_new_columns(db_url)
    for command in ("status", "best"):
        out = cli(command, name, "--db", db_url)
        assert out.exit_code == 2, out.output
        assert "database is at revision 0002_meta" in out.output
        assert "run `hpsweep db upgrade`" in out.output
    from sqlalchemy import inspect

    reader = make_engine(db_url, readonly=True, any_revision=True)
    columns = {c["name"] for c in inspect(reader).get_columns("stages")}
    assert "at_chance" not in columns
    assert "alembic_version" not in inspect(reader).get_table_names()
    reader.dispose()


def run_inline(engine, trial_ids) -> None:  # type: ignore[no-untyped-def]
    """Train the trials in this process and advance their stages, as workers would."""
    from worker.dataset_cache import DatasetCache
    from worker.trainer import TrialContext, run_attempt

    ctx = TrialContext(engine=engine, worker="t", lease_seconds=600.0, datasets=DatasetCache())
    while trial_ids:
        stage = None
        for tid in trial_ids:
            stage = run_attempt(ctx, tid).stage_id
        done = advance(engine, stage)
        trial_ids = list(done.trial_ids) if done else []


def test_extend_a_finished_sweep_adds_a_stage_that_runs_and_ranks(tmp_path, db_url):  # type: ignore[no-untyped-def]
    from coordinator.extend import extend_sweep

    space = {"learning_rate": {"dist": "log_uniform", "low": 1e-4, "high": 1e-3}}
    cfg = load_config(write_config(tmp_path / "c.yaml", space=space,
                                   stages=[{"trials": 6, "epochs": 1}, {"trials": 4, "epochs": 2}]))
    engine = make_engine(db_url)
    made = create_sweep(engine, cfg, "q", prepare_dataset(cfg))
    run_inline(engine, transact(engine, lambda s: trial_ids_by_idx(s, made.stage_id)))
    assert scalar(engine, "SELECT status FROM sweeps") == "done"
    out = extend_sweep(engine, None, made.sweep_id, trials=5, epochs=3)
    assert (out.stage_idx, len(out.trial_ids)) == (2, 5)
    assert scalar(engine, "SELECT status FROM sweeps") == "running"
    # planned from stage 1's ranking and flags, its ranges recorded like any other
    assert scalar(engine, "SELECT COUNT(*) FROM stage_ranges r JOIN stages s ON "
                          "s.id = r.stage_id WHERE s.idx = 2") == 1
    run_inline(engine, list(out.trial_ids))
    assert rows(engine, "SELECT status, n_stages FROM sweeps") == [("done", 3)]
    assert rows(engine, "SELECT idx, status, n_trials, epochs FROM stages ORDER BY idx")[2] == (
        2, "done", 5, 3)
    assert scalar(engine, "SELECT COUNT(*) FROM trials t JOIN stages s ON s.id = t.stage_id "
                          "WHERE s.idx = 2 AND t.status = 'done'") == 5
    best = cli("best", made.name, "--db", db_url, "--top", "20")
    assert best.exit_code == 0
    ranked_stages = {line.split()[1] for line in best.output.splitlines()[1:]
                     if line[:1].isdigit()}
    assert "2" in ranked_stages  # the new stage's trials rank with the others
    # a second extend plans from the new last stage
    again = extend_sweep(engine, None, made.sweep_id)
    assert again.stage_idx == 3


def test_extend_refuses_a_running_sweep(tmp_path, sqlite_url, redis_url):  # type: ignore[no-untyped-def]
    engine, _, name = make(tmp_path, sqlite_url, [{"trials": 3, "epochs": 1}])
    res = cli("extend", name, "--db", sqlite_url, "--redis", redis_url)
    assert res.exit_code == 2
    assert f"sweep {name} is still running" in res.output
    assert scalar(engine, "SELECT COUNT(*) FROM stages") == 1


def test_resume_of_a_cancelled_sweep_explains_itself(tmp_path, sqlite_url, redis_url):  # type: ignore[no-untyped-def]
    _, _, name = make(tmp_path, sqlite_url, [{"trials": 3, "epochs": 1},
                                             {"trials": 3, "epochs": 1}])
    assert cli("cancel", name, "--db", sqlite_url, "--redis", redis_url).exit_code == 0
    res = CliRunner().invoke(main, ["resume", name, "--db", sqlite_url, "--redis", redis_url])
    assert res.exit_code == 0
    assert f"sweep {name} is cancelled: resume only re-enqueues" in res.output
    assert f"`hpsweep extend {name}`" in res.output


def test_extend_a_cancelled_sweep(tmp_path, sqlite_url, redis_url):  # type: ignore[no-untyped-def]
    """Cancelled in stage 0 after some trials finished: extend plans stage 1 from them,
    with the config's planned stage 1 budget; nothing is called 'at chance'."""
    from coordinator.extend import extend_sweep

    engine, sweep_id, name = make(tmp_path, sqlite_url, [{"trials": 6, "epochs": 1},
                                                         {"trials": 3, "epochs": 2}])
    sid = stage_id(engine, sweep_id, 0)
    with engine.begin() as conn:
        conn.execute(text("UPDATE trials SET status = 'done', best_val_acc = 0.5 + 0.01 * idx,"
                          " best_val_loss = 1.0 WHERE stage_id = :s AND idx < 3"), {"s": sid})
    assert cli("cancel", name, "--db", sqlite_url, "--redis", redis_url).exit_code == 0
    out = extend_sweep(engine, None, sweep_id)
    assert (out.stage_idx, len(out.trial_ids)) == (1, 3)
    assert rows(engine, "SELECT idx, status, n_trials, epochs FROM stages ORDER BY idx") == [
        (0, "done", 6, 1), (1, "running", 3, 2)]
    assert scalar(engine, "SELECT status FROM sweeps") == "running"
    assert "CHANCE" not in cli("status", name, "--db", sqlite_url).output


def test_a_stage_with_nothing_finished_is_not_called_at_chance(tmp_path, sqlite_url, redis_url):  # type: ignore[no-untyped-def]
    from coordinator.extend import extend_sweep

    engine, sweep_id, name = make(tmp_path, sqlite_url, [{"trials": 4, "epochs": 1}])
    assert cli("cancel", name, "--db", sqlite_url, "--redis", redis_url).exit_code == 0
    extend_sweep(engine, None, sweep_id)
    assert scalar(engine, "SELECT at_chance FROM stages WHERE idx = 0") in (False, 0)


def test_extend_through_the_cli_and_real_workers(tmp_path, sqlite_url, redis_url):  # type: ignore[no-untyped-def]
    from tests.coordinator_tests.finished_sweep import build, drain

    name = build(sqlite_url, redis_url, tmp_path)
    res = cli("extend", name, "--db", sqlite_url, "--redis", redis_url, "--trials", "3",
              "--epochs", "7")
    assert res.exit_code == 0, res.output
    assert f"sweep {name}: stage 2 added with 3 trial(s)" in res.output
    drain(sqlite_url, redis_url, tmp_path)
    engine = make_engine(sqlite_url, readonly=True)
    assert rows(engine, "SELECT status, n_stages FROM sweeps") == [("done", 3)]
    assert scalar(engine, "SELECT COUNT(*) FROM trials t JOIN stages s ON s.id = t.stage_id "
                          "WHERE s.idx = 2 AND t.status = 'done' AND t.epochs = 7") == 3
