"""Ensembles: the four methods end to end, their math, and the 'seeds' stage that
runs on a finished sweep (claims, leases, advancement) on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, text

from coordinator import ensemble as ens
from coordinator.config import load_config
from coordinator.ensemble_text import result_text
from coordinator.launch import create_sweep, prepare_dataset
from coordinator.stages import advance
from storage import attempts, transitions
from storage import sweeps as sweep_store
from storage import trials as trial_store
from storage.db import make_engine, transact
from tests.coordinator_tests.finished_sweep import build, cli, drain
from tests.support.configs import write_config
from tests.support.db import assert_curves_complete, rows, scalar

pytestmark = pytest.mark.integration


def ensemble_rows(engine: Engine, method: str) -> list[tuple]:
    return rows(engine, "SELECT members, val_acc, test_acc, single_val_acc, single_test_acc "
                        "FROM ensembles WHERE method = :m ORDER BY id", m=method)


def run_ensemble(db: str, name: str, method: str, k: int | None = None
                 ) -> tuple[Engine, tuple, str]:
    """``hpsweep ensemble NAME --method METHOD [--k K]``: the engine, its one ensembles row,
    and the command's output."""
    res = cli("ensemble", name, "--method", method, *(["--k", str(k)] if k else []), "--db", db)
    assert res.exit_code == 0, res.output
    engine = make_engine(db)
    [row] = ensemble_rows(engine, method)
    return engine, row, res.output


def best_search_trial(engine: Engine) -> tuple[int, float]:
    return rows(engine, """SELECT t.id, t.best_val_acc FROM trials t
                           JOIN stages st ON st.id = t.stage_id
                           WHERE t.status = 'done' AND st.kind = 'search'
                           ORDER BY t.best_val_acc DESC, t.best_val_loss, t.id LIMIT 1""")[0]


# ---------------------------------------------------------------- math


def test_mean_proba_and_accuracy() -> None:
    a = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]], dtype=np.float32)
    b = np.array([[0.3, 0.7], [0.8, 0.2], [0.1, 0.9]], dtype=np.float32)
    mean = ens.mean_proba([a, b])
    np.testing.assert_allclose(mean, [[0.6, 0.4], [0.6, 0.4], [0.15, 0.85]], rtol=1e-6)
    assert mean.dtype == np.float32
    assert ens.accuracy(mean, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    assert ens.accuracy(a, np.array([0, 1, 1])) == 1.0
    with pytest.raises(ValueError):
        ens.mean_proba([])


def test_distinct_configs_keeps_the_best_of_each_configuration() -> None:
    def row(tid: int, lr: float) -> trial_store.TrialRow:
        return trial_store.TrialRow(tid, 1, 1, 0, tid, "done", 0, 1, 0.5, 1.0, 1, 1, None, None,
                                    None, {"learning_rate": lr})

    ranked = [row(5, 0.1), row(2, 0.1), row(7, 0.2), row(1, 0.3), row(3, 0.2)]
    assert [t.id for t in ens.distinct_configs(ranked, 5)] == [5, 7, 1]
    assert [t.id for t in ens.distinct_configs(ranked, 2)] == [5, 7]


# ---------------------------------------------------------------- methods on a finished sweep


def test_top_k_beats_or_says_plainly_it_is_lower(finished: tuple[str, str]) -> None:
    db, name = finished
    engine, (members, val, test, single_val, single_test), output = run_ensemble(
        db, name, "top-k", 5)
    members = json.loads(members)
    assert len(members) == 5 and len({m["trial"] for m in members}) == 5
    params = transact(engine, lambda s: trial_store.trial_params(s, [m["trial"] for m in members]))
    assert len({json.dumps(p, sort_keys=True) for p in params.values()}) == 5  # 5 configurations
    best_id, best_acc = best_search_trial(engine)
    assert members[0]["trial"] == best_id
    # the single model is rebuilt from its checkpoint on the workers' split: same accuracy
    assert single_val == pytest.approx(best_acc, abs=1e-9)
    assert 0 <= test <= 1 and 0 <= single_test <= 1
    assert val >= single_val or "LOWER than the best single model" in output
    assert f"{val:.4f}" in output and f"{single_val:.4f}" in output


def test_top_k_of_one_is_the_best_single_model(finished: tuple[str, str]) -> None:
    db, name = finished
    engine = make_engine(db)
    sweep_id = transact(engine, lambda s: sweep_store.get_sweep(s, name)).id
    r = ens.evaluate(engine, sweep_id, "top-k", 1)
    assert r.ensemble == r.single and r.members[0].trial_id == r.single_trial_id
    assert "gain" in result_text(r) and "\033[" not in result_text(r)
    assert "\033[" in result_text(r, color=True)


def test_snapshots_are_the_last_k_epochs_of_the_best_trial(finished: tuple[str, str]) -> None:
    db, name = finished
    engine, (members, val, test, single_val, _), _ = run_ensemble(db, name, "snapshots", 3)
    best_id, _ = best_search_trial(engine)
    epochs = scalar(engine, "SELECT epochs FROM trials WHERE id = :t", t=best_id)
    assert [(m["trial"], m["epoch"], m["checkpoint"]) for m in json.loads(members)] == [
        (best_id, epochs - i, "snapshot") for i in range(3)]
    assert 0 <= val <= 1 and 0 <= test <= 1 and single_val is not None


def test_average_scores_the_ema_weights_as_training_did(finished: tuple[str, str]) -> None:
    db, name = finished
    engine, (members, val, _, _, _), _ = run_ensemble(db, name, "average")
    [member] = json.loads(members)
    assert member["weights"] == "ema"
    ema_val_acc = scalar(engine, "SELECT ema_val_acc FROM curves WHERE trial_id = :t "
                                 "AND epoch = :e", t=member["trial"], e=member["epoch"])
    assert val == pytest.approx(ema_val_acc, abs=1e-9)


# ---------------------------------------------------------------- the seeds stage


def test_seeds_stage_runs_on_a_finished_sweep_and_never_advances_it(tmp_path: Path,
                                                                    db_url: str) -> None:
    engine = make_engine(db_url)
    # three stages: a seeds stage at idx 1 must not be taken for the search's next stage
    cfg = load_config(write_config(tmp_path / "c.yaml", stages=[{"trials": 3, "epochs": 2},
                                                                 {"trials": 2, "epochs": 2},
                                                                 {"trials": 2, "epochs": 2}]))
    sweep_id = create_sweep(engine, cfg, "q", prepare_dataset(cfg)).sweep_id
    with engine.begin() as c:
        c.execute(text("UPDATE trials SET status = 'done', best_val_acc = id / 10.0 "
                       "WHERE id IN (SELECT MIN(id) FROM trials)"))
    with pytest.raises(ens.EnsembleError, match="still running"):
        ens.plan_seeds(engine, sweep_id, 2)
    transact(engine, lambda s: transitions.finish_sweep(s, sweep_id))
    plan = ens.plan_seeds(engine, sweep_id, 2)
    assert plan.created and len(plan.trial_ids) == 2
    search_queued = scalar(engine, "SELECT MAX(id) FROM trials WHERE status = 'queued' AND "
                                   "stage_id <> :s", s=plan.stage_id)
    first, second = plan.trial_ids

    def claim(tid: int):  # type: ignore[no-untyped-def]
        return transact(engine, lambda s: attempts.claim(s, engine, tid, "tok", "w", 30.0))

    assert claim(search_queued) is None  # the search itself stays closed
    assert claim(first) is not None
    assert transact(engine, lambda s: trial_store.trial_state(s, first)) == ("running", "running")
    assert transact(engine, lambda s: trial_store.trial_state(s, search_queued)) == ("queued",
                                                                                     "done")
    assert [t for t, _ in transact(engine, lambda s: trial_store.queued_trials(s, sweep_id))] \
        == [second]
    with engine.begin() as c:  # the worker was lost: the lease runs out
        c.execute(text("UPDATE trials SET lease_expires = 0 WHERE id = :t"), {"t": first})
    assert transact(engine, lambda s: attempts.reap_expired(s, engine)) == ([first], [])
    with engine.begin() as c:
        c.execute(text("UPDATE trials SET status = 'done' WHERE stage_id = :s"),
                  {"s": plan.stage_id})
    done = advance(engine, plan.stage_id)
    assert done is not None and done.next_stage_id is None and not done.sweep_done
    assert rows(engine, "SELECT idx, kind, status FROM stages ORDER BY idx") == [
        (0, "search", "running"), (1, "seeds", "done")]
    assert scalar(engine, "SELECT status FROM sweeps") == "done"
    assert not ens.plan_seeds(engine, sweep_id, 2).created  # reused, not retrained


def test_seeds_end_to_end_through_workers(tmp_path: Path, db_url: str, redis_url: str) -> None:
    name = build(db_url, redis_url, tmp_path, stages=[{"trials": 4, "epochs": 3}],
                 keep_snapshots=0, train={"depth": 1, "batch_size": 64, "update_rule": "adam"})
    engine = make_engine(db_url)
    best_id, _ = best_search_trial(engine)
    res = cli("ensemble", name, "--method", "seeds", "--k", "2", "--no-wait", "--db", db_url,
              "--redis", redis_url)
    assert res.exit_code == 0 and "queued 2 seed trial(s)" in res.output, res.output
    seeds = rows(engine, """SELECT t.id, t.seed, t.epochs FROM trials t JOIN stages st
                            ON st.id = t.stage_id WHERE st.kind = 'seeds' ORDER BY t.id""")
    best = transact(engine, lambda s: trial_store.trial_params(s, [best_id, seeds[0][0],
                                                                   seeds[1][0]]))
    assert best[seeds[0][0]] == best[seeds[1][0]] == best[best_id]
    best_seed = scalar(engine, "SELECT seed FROM trials WHERE id = :t", t=best_id)
    assert len({best_seed, seeds[0][1], seeds[1][1]}) == 3 and seeds[0][2] == 3

    drain(db_url, redis_url, tmp_path)  # a worker trains them although the sweep is done
    assert rows(engine, "SELECT status FROM trials WHERE id IN (:a, :b)",
                a=seeds[0][0], b=seeds[1][0]) == [("done",), ("done",)]
    assert_curves_complete(engine)  # every epoch trained: not cancelled at the first one
    assert scalar(engine, "SELECT COUNT(*) FROM stages") == 2
    assert scalar(engine, "SELECT status FROM sweeps") == "done"

    res = cli("ensemble", name, "--method", "seeds", "--k", "2", "--db", db_url,
              "--redis", redis_url)
    assert res.exit_code == 0, res.output
    [(members, val, test, single_val, _)] = ensemble_rows(engine, "seeds")
    assert sorted(m["trial"] for m in json.loads(members)) == [seeds[0][0], seeds[1][0]]
    assert None not in (val, test, single_val)
    assert scalar(engine, "SELECT COUNT(*) FROM stages") == 2  # combined, not retrained

    for method, hint in (("average", "ema_decay"), ("snapshots", "keep_snapshots")):
        res = cli("ensemble", name, "--method", method, "--db", db_url)
        assert res.exit_code == 2 and hint in res.output, res.output  # bad input, not a crash
        assert "Traceback" not in res.output


def test_seeds_with_local_workers_waits_then_combines(finished: tuple[str, str],
                                                      redis_url: str) -> None:
    db, name = finished
    res = cli("ensemble", name, "--method", "seeds", "--k", "2", "--workers", "1", "--db", db,
              "--redis", redis_url)
    assert res.exit_code == 0, res.output
    engine = make_engine(db)
    assert rows(engine, """SELECT t.status, COUNT(*) FROM trials t JOIN stages st
                           ON st.id = t.stage_id WHERE st.kind = 'seeds'
                           GROUP BY t.status""") == [("done", 2)]
    assert scalar(engine, "SELECT status FROM stages WHERE kind = 'seeds'") == "done"
    [(members, val, *_)] = ensemble_rows(engine, "seeds")
    assert len(json.loads(members)) == 2 and val is not None
    assert "ensemble seeds of sweep" in res.output
