"""The CLI's contract for bad input: exit 2, a message naming the problem, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from redis import Redis

from coordinator.cli import main
from storage.db import make_engine
from tests.support.configs import write_config
from tests.support.db import scalar
from tests.support.redis_lease import keys_besides_lease

pytestmark = pytest.mark.integration


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_lists_every_contract_command() -> None:
    out = invoke("--help").output
    for cmd in ("run", "launch", "worker", "status", "best", "resume", "cancel", "query"):
        assert cmd in out


def bad(path: Path, **edit) -> Path:
    cfg = yaml.safe_load(write_config(path).read_text())
    for dotted, value in edit.items():
        node = cfg
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[keys[-1]] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(("edit", "expected"), [
    ({"space__learning_rate__low": 0}, "space.learning_rate.low"),
    ({"space__learning_rate__low": 2.0}, "space.learning_rate"),
    ({"space__reg__dist": "gaussian"}, "space.reg.dist"),
    ({"dataset": "mnist-please"}, "dataset"),
    ({"stages__0__epochs": 0}, "stages[0].epochs"),
    ({"space__learning_rate__low": "abc"}, "space.learning_rate.low"),
])
def test_bad_config_exits_2_naming_the_key_and_writes_nothing(
        tmp_path, redis_url, edit, expected) -> None:  # type: ignore[no-untyped-def]
    cfg = bad(tmp_path / "c.yaml", **edit)
    db = tmp_path / "x.db"
    res = invoke("launch", str(cfg), "--db", f"sqlite:///{db}", "--redis", redis_url)
    assert res.exit_code == 2, res.output
    assert expected in res.output
    assert not db.exists()
    assert keys_besides_lease(Redis.from_url(redis_url)) == []


def test_misspelled_top_level_key_gets_a_suggestion(tmp_path: Path) -> None:
    cfg = yaml.safe_load(write_config(tmp_path / "c.yaml").read_text())
    cfg["stage"] = cfg.pop("stages")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = invoke("launch", str(tmp_path / "c.yaml"), "--db", f"sqlite:///{tmp_path}/x.db")
    assert res.exit_code == 2
    assert "did you mean 'stages'" in res.output


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    res = invoke("launch", str(tmp_path / "nope.yaml"), "--db", f"sqlite:///{tmp_path}/x.db")
    assert res.exit_code == 2
    assert "nope.yaml" in res.output


def test_unknown_sweep_exits_2(sqlite_url: str) -> None:
    make_engine(sqlite_url).dispose()  # an hpsweep database without that sweep
    res = invoke("status", "no-such-sweep", "--db", sqlite_url)
    assert res.exit_code == 2
    assert "no-such-sweep" in res.output


@pytest.mark.parametrize("sql", [
    "DELETE FROM trials",
    "delete from trials where 1=1",
    "SELECT 1; DELETE FROM trials",
    "UPDATE trials SET status = 'done'",
    "DROP TABLE trials",
    "/* hidden */ DELETE FROM trials",
    "WITH x AS (SELECT 1) DELETE FROM trials",
])
def test_query_refuses_writes_and_changes_nothing(tmp_path, redis_url, sql) -> None:  # type: ignore[no-untyped-def]
    db = f"sqlite:///{tmp_path}/q.db"
    assert invoke("launch", str(write_config(tmp_path / "c.yaml")), "--db", db,
                  "--redis", redis_url).exit_code == 0
    res = invoke("query", sql, "--db", db)
    assert res.exit_code == 2, res.output
    assert scalar(make_engine(db), "SELECT COUNT(*) FROM trials") == 6


def test_query_formats(tmp_path: Path, redis_url: str) -> None:
    db = f"sqlite:///{tmp_path}/q.db"
    invoke("launch", str(write_config(tmp_path / "c.yaml")), "--db", db, "--redis", redis_url)
    sql = "SELECT name, value FROM params WHERE name = 'learning_rate' ORDER BY trial_id"
    table = invoke("query", sql, "--db", db)
    assert table.exit_code == 0 and "(6 rows)" in table.output
    csv_out = invoke("query", sql, "--db", db, "--format", "csv").output.splitlines()
    assert csv_out[0] == "name,value" and len(csv_out) == 7
    assert '"name": "learning_rate"' in invoke("query", sql, "--db", db, "--format",
                                                "json").output


def test_unreachable_redis_fails_fast_with_masked_url(tmp_path: Path) -> None:
    res = invoke("resume", "x", "--db", f"sqlite:///{tmp_path}/x.db", "--redis",
                 "redis://user:s3cret@127.0.0.1:1/0")
    assert res.exit_code in (1, 2)
    assert "s3cret" not in res.output


def test_wrong_redis_credentials_fail_fast_and_are_masked(tmp_path: Path, redis_url: str) -> None:
    if not redis_url.startswith("redis://"):
        pytest.skip("needs the TCP Redis server")
    wrong = redis_url.replace("redis://", "redis://nobody:wrongpw@")
    db = f"sqlite:///{tmp_path}/x.db"
    assert invoke("launch", str(write_config(tmp_path / "c.yaml")), "--db", db,
                  "--redis", redis_url).exit_code == 0
    res = invoke("resume", "t", "--db", db, "--redis", wrong)
    assert res.exit_code == 1
    assert "wrongpw" not in res.output and "***" in res.output
