"""A dataset with its own test split: the held-out test accuracy ``hpsweep ensemble``
reports is computed on exactly those rows (recomputed here from the file itself)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coordinator import ensemble as ens
from storage.db import make_engine
from tests.coordinator_tests.finished_sweep import build, cli
from tests.support.db import rows
from worker.nn.protocol import predict_proba

pytestmark = pytest.mark.integration


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return (rng.standard_normal((n, 4)) + 4.0 * y[:, None]).astype(np.float32), y


def test_ensemble_test_accuracy_is_computed_on_the_given_test_rows(tmp_path, redis_url) -> None:
    (X_train, y_train), (X_test, y_test) = blobs(300, 1), blobs(90, 2)
    y_test = (y_test + 1) % 3  # labels no model of the training rows predicts: ~0 accuracy
    data = tmp_path / "own.npz"
    np.savez(data, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test)
    db = f"sqlite:///{tmp_path / 'own.db'}"
    name = build(db, redis_url, tmp_path, dataset=str(data),
                 stages=[{"trials": 3, "epochs": 3}], keep_snapshots=0)
    res = cli("ensemble", name, "--method", "top-k", "--k", "2", "--db", db)
    assert res.exit_code == 0, res.output
    engine = make_engine(db)
    [(members, val_acc, test_acc)] = rows(engine, "SELECT members, val_acc, test_acc "
                                                  "FROM ensembles")
    # the documented preprocessing, from the file: training rows' mean and std, float32
    mean = X_train.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = X_train.astype(np.float64).std(axis=0).astype(np.float32)
    X = (X_test - mean) / std
    probs = [predict_proba(ens.load_model(engine, ens.Member(m["trial"], m["epoch"],
                                                             m["checkpoint"], m["weights"])),
                           X) for m in json.loads(members)]
    assert test_acc == ens.accuracy(ens.mean_proba(probs), y_test)
    assert test_acc < 0.2 < 0.8 < val_acc  # on the given rows, not on carved training rows
    engine.dispose()
