"""``hpsweep launch`` on a truncated or malformed CIFAR/MNIST file: exit 2 naming the file
and the byte offset, and nothing written (no database file, no sweep row, no blob)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from coordinator.cli import main
from storage.db import make_engine
from tests.coordinator_tests.datasets_tests.formats import write_cifar, write_mnist
from tests.support.configs import write_config
from tests.support.db import rows

NO_REDIS = "redis://127.0.0.1:1/0"  # launch defers enqueueing; nothing here gets that far


def launch(cfg: Path, db: str) -> Result:
    return CliRunner().invoke(main, ["launch", str(cfg), "--db", db, "--redis", NO_REDIS])


def _cifar_truncated(folder: Path) -> tuple[str, Path, str]:
    write_cifar(folder)
    path = folder / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-7])
    return f"cifar10:{folder}", path, "truncated record at byte offset 15365"


def _mnist_bad_type(folder: Path) -> tuple[str, Path, str]:
    write_mnist(folder, gz=True)
    path = folder / "t10k-images-idx3-ubyte.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[2] = 0x0C
    path.write_bytes(gzip.compress(bytes(data)))
    return f"mnist:{folder}", path, "byte offset 2: data type 0x0c"


@pytest.mark.parametrize("make_bad", [_cifar_truncated, _mnist_bad_type],
                         ids=["cifar-truncated", "mnist-bad-type"])
def test_bad_binary_files_exit_2_and_write_nothing(tmp_path, make_bad) -> None:
    existing = f"sqlite:///{tmp_path / 'existing.db'}"
    res = launch(write_config(tmp_path / "ok.yaml", stages=[{"trials": 2, "epochs": 1}]),
                 existing)
    assert res.exit_code == 0, res.output
    engine = make_engine(existing)
    counts = "SELECT (SELECT COUNT(*) FROM sweeps), (SELECT COUNT(*) FROM datasets)"
    before = rows(engine, counts)
    spec, path, problem = make_bad(tmp_path / "data")
    cfg = write_config(tmp_path / "bad.yaml", dataset=spec, stages=[{"trials": 2, "epochs": 1}])
    fresh = tmp_path / "fresh.db"
    for db in (f"sqlite:///{fresh}", existing):
        res = launch(cfg, db)
        out = res.output
        assert res.exit_code == 2, out
        assert f"{path}: " in out and problem in out and "Traceback" not in out
    assert not fresh.exists()
    assert rows(engine, counts) == before
    engine.dispose()
