"""The example plug-in model end to end: ``hpsweep run`` over the convnet on digits read as
1x8x8 images with two worker processes, then every ensemble method and the plots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from coordinator.cli import main
from storage.db import make_engine
from tests.support.db import assert_curves_complete, rows, scalar
from tests.support.processes import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_run_ensemble_and_plot_a_convnet_sweep(tmp_path: Path, redis_url: str) -> None:
    pytest.importorskip("sklearn")
    cfg = yaml.safe_load((ROOT / "configs" / "digits-convnet.yaml").read_text())
    cfg["stages"] = [{"trials": 4, "epochs": 2}, {"trials": 2, "epochs": 3}]
    path = tmp_path / "convnet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    db = f"sqlite:///{tmp_path}/s.db"
    proc = subprocess.run([sys.executable, "-m", "coordinator.cli", "run", str(path),
                           "--workers", "2", "--db", db, "--redis", redis_url], cwd=ROOT,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert "num_filters" in proc.stdout.decode()  # the model's own hyperparameter, ranked

    engine = make_engine(db)
    assert scalar(engine, "SELECT status FROM sweeps") == "done"
    assert scalar(engine, "SELECT COUNT(*) FROM trials WHERE status NOT IN "
                          "('done', 'diverged')") == 0
    assert_curves_complete(engine)
    assert scalar(engine, "SELECT MAX(val_acc) FROM curves") > 0.8
    assert scalar(engine, "SELECT COUNT(*) FROM curves WHERE ema_val_acc IS NULL "
                          "AND val_acc IS NOT NULL") == 0
    assert scalar(engine, "SELECT COUNT(*) FROM checkpoints WHERE kind = 'snapshot'") > 0
    assert scalar(engine, "SELECT COUNT(*) FROM stage_ranges WHERE param = 'num_filters'") == 2
    # boundary flags are computed for the model's searched parameters like any other
    flagged = rows(engine, "SELECT DISTINCT param FROM boundary_flags")
    assert {p for (p,) in flagged} <= {"learning_rate", "reg", "num_filters"}

    for method in ("top-k", "snapshots", "average", "seeds"):
        extra = ["--workers", "2"] if method == "seeds" else []
        res = CliRunner().invoke(main, ["ensemble", "--method", method, "--k", "2", "--db", db,
                                        "--redis", redis_url, *extra],
                                 catch_exceptions=False)
        assert res.exit_code == 0, (method, res.output)
        assert "recorded as ensembles row" in res.output, res.output
    methods = rows(engine, "SELECT method, val_acc, test_acc FROM ensembles ORDER BY id")
    assert [m for m, _, _ in methods] == ["top-k", "snapshots", "average", "seeds"]
    assert all(0.5 < v <= 1 and 0.5 < t <= 1 for _, v, t in methods), methods

    res = CliRunner().invoke(main, ["plot", "--db", db, "--out", str(tmp_path / "plots")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == [
        "1_lr_reg.png", "2_params.png", "3_curves.png", "4_best_so_far.png"]
