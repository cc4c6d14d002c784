"""Bad datasets at ``hpsweep launch``: exit 2 naming the file and the problem, no traceback,
the database and Redis unchanged (the config-key cases live in coordinator_tests/test_cli.py).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import inspect

from coordinator.cli import main
from storage.db import make_engine
from tests.support.configs import write_config
from tests.support.db import rows
from tests.support.servers import RedisServer, private_redis

pytestmark = [pytest.mark.fault, pytest.mark.integration]


def _nan_features(path: Path) -> str:
    X = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    X[17, 2] = np.nan
    np.savez(path, X=X, y=np.arange(300) % 3)
    return "NaN or infinite values (or beyond float32), first at row 17, column 3"


def _labels_do_not_match_rows(path: Path) -> str:
    np.savez(path, X=np.ones((300, 4), np.float32), y=np.arange(250) % 3)
    return "X has 300 rows but y has 250 labels"


def _not_an_archive(path: Path) -> str:
    path.write_bytes(b"these bytes are not a zip archive")
    return "not an .npz archive"


def _truncated_archive(path: Path) -> str:
    _nan_features(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "corrupt .npz archive"


def _missing_labels(path: Path) -> str:
    with zipfile.ZipFile(path, "w") as z:  # an .npz with X only
        z.writestr("X.npy", b"")
    return "y"


def _unreadable(path: Path) -> str:
    _labels_do_not_match_rows(path)
    path.chmod(0)
    return "cannot read file"


CASES = [_nan_features, _labels_do_not_match_rows, _not_an_archive, _truncated_archive,
         _missing_labels]
if os.geteuid() != 0:  # root reads a mode-000 file anyway
    CASES.append(_unreadable)


def _snapshot(db_url: str) -> dict[str, int]:
    engine = make_engine(db_url, readonly=True)
    try:
        return {t: rows(engine, f"SELECT COUNT(*) FROM {t}")[0][0]
                for t in inspect(engine).get_table_names()}
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def redis_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with private_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def existing_db(tmp_path_factory: pytest.TempPathFactory, redis_once: RedisServer) -> str:
    """A database that already holds a sweep (launched while Redis was down)."""
    tmp = tmp_path_factory.mktemp("existing")
    url = f"sqlite:///{tmp / 'existing.db'}"
    config = write_config(tmp / "ok.yaml", "blobs", dataset="spiral", stages=[(3, 1)])
    res = CliRunner().invoke(main, ["launch", str(config), "--db", url,
                                    "--redis", "redis://127.0.0.1:1/0"])
    assert res.exit_code == 0, res.output
    return url


@pytest.mark.parametrize("make_bad", CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_dataset_exits_2_naming_the_problem_and_changes_nothing(
        tmp_path, make_bad, existing_db, redis_once) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data.npz"
    problem = make_bad(data)
    cfg = write_config(tmp_path / "c.yaml", "blobs", dataset=data, stages=[(3, 1)])
    fresh = tmp_path / "fresh.db"
    before = _snapshot(existing_db)
    for db in (f"sqlite:///{fresh}", existing_db):
        res = CliRunner().invoke(main, ["launch", str(cfg), "--db", db,
                                        "--redis", redis_once.url])
        assert res.exit_code == 2, res.output
        assert str(data) in res.output and problem in res.output, res.output
        assert "Traceback" not in res.output
    assert not fresh.exists(), "a bad dataset created the database file"
    assert _snapshot(existing_db) == before
    assert redis_once.client().dbsize() == 0
