"""``hpsweep plot``: four valid PNGs of sensible size, titled and labelled figures,
and a clear error without matplotlib."""

from __future__ import annotations

import struct
import sys

import pytest

from coordinator import plots
from storage import sweeps as sweep_store
from storage.db import make_engine, transact
from tests.coordinator_tests.finished_sweep import Template, cli

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Template:  # type: ignore[no-untyped-def]
    return Template(tmp_path_factory.mktemp("plots"))


@pytest.fixture
def finished(template, redis_url, tmp_path) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    return template.copy(redis_url, tmp_path)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which must come first."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def test_plot_writes_four_valid_pngs(finished, tmp_path) -> None:  # type: ignore[no-untyped-def]
    db, name = finished
    out = tmp_path / "figs" / "nested"
    res = cli("plot", name, "--out", str(out), "--db", db)
    assert res.exit_code == 0, res.output
    paths = [out / n for n in plots.PNG_NAMES]
    assert res.output.split() == [str(p) for p in paths]
    for path in paths:
        data = path.read_bytes()
        width, height = png_size(data)
        assert 400 <= width <= 3000 and 300 <= height <= 2000, (path.name, width, height)
        assert len(data) > 10_000, path.name  # drawn, not blank
        assert data.endswith(b"IEND\xaeB`\x82")  # complete file


def test_figures_have_titles_and_labelled_axes(finished) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    db, name = finished
    engine = make_engine(db)
    sweep_id = transact(engine, lambda s: sweep_store.get_sweep(s, name)).id
    figs = plots.figures(engine, sweep_id)
    try:
        assert len(figs) == 4
        for fig in figs:
            axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison
                    and ax.get_label() != "<colorbar>"]
            assert axes
            assert fig.get_suptitle() or all(ax.get_title() for ax in axes)
            assert all(ax.get_xlabel() for ax in axes) and axes[0].get_ylabel()
            if fig is not figs[0]:  # the stage panels of figure 1 share the first one's y axis
                assert all(ax.get_ylabel() for ax in axes)
        lr_reg = figs[0].axes[0]
        assert lr_reg.get_xscale() == "log" and lr_reg.get_yscale() == "log"
        assert len([ax for ax in figs[0].axes if ax.get_label() != "<colorbar>"]) == 2  # stages
        assert any("range" in str(line.get_label()) for line in lr_reg.lines)  # the range box
        params = [ax.get_xlabel() for ax in figs[1].axes if ax.axison]
        assert params == ["hidden_size", "learning_rate", "reg"]
    finally:
        for fig in figs:
            plt.close(fig)


def test_best_so_far_is_a_running_maximum() -> None:
    assert plots.best_so_far([None, 0.2, 0.1, None, 0.5, 0.3]) == [None, 0.2, 0.2, 0.2, 0.5, 0.5]


def test_plot_without_matplotlib_says_how_to_install(finished, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    db, name = finished
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    res = cli("plot", name, "--out", str(tmp_path / "p"), "--db", db)
    assert res.exit_code == 1
    assert "pip install 'hpsweep[plot]'" in res.output
    assert not (tmp_path / "p").exists()
