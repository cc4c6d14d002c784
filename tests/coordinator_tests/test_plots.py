"""``hpsweep plot``: four valid PNGs of sensible size, titled and labelled figures,
and a clear error without matplotlib."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from coordinator import plots
from storage import sweeps as sweep_store
from storage.db import make_engine, transact
from tests.coordinator_tests.finished_sweep import cli
from tests.support.db import rows

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which must come first."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def test_plot_writes_four_valid_pngs(finished: tuple[str, str], tmp_path: Path) -> None:
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


def test_figures_have_titles_and_labelled_axes(finished: tuple[str, str]) -> None:
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


def test_plot_without_matplotlib_says_how_to_install(
        finished: tuple[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db, name = finished
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    res = cli("plot", name, "--out", str(tmp_path / "p"), "--db", db)
    assert res.exit_code == 1
    assert "pip install -e '.[plot]'" in res.output
    assert not (tmp_path / "p").exists()


@pytest.fixture
def synthetic(sqlite_url):  # type: ignore[no-untyped-def]
    """A 3-stage sweep (bulk-inserted), its engine and id; one trial diverged after a good
    first epoch (it keeps that epoch's accuracy, higher than every done trial's)."""
    from sqlalchemy import update

    from storage.models import Trial
    from tests.support.synthetic_sweep import build

    engine = make_engine(sqlite_url)
    sweep_id = build(engine, 300)
    late = rows(engine, "SELECT min(id) FROM trials WHERE status = 'diverged'")[0][0]
    with engine.begin() as conn:
        conn.execute(update(Trial).where(Trial.id == late).values(best_val_acc=0.9999))
    yield engine, sweep_id, late
    engine.dispose()


def _close(figs) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    for fig in figs:
        plt.close(fig)


def test_lr_reg_colour_scale_fits_the_data_and_marks_the_best(synthetic) -> None:  # type: ignore[no-untyped-def]
    engine, sweep_id, late = synthetic
    lo, hi = rows(engine, "SELECT min(best_val_acc), max(best_val_acc) FROM trials "
                          "WHERE status = 'done'")[0]
    best = plots.top_trials(plots.gather(engine, sweep_id).trials, 1)[0]
    figs = plots.figures(engine, sweep_id)
    try:
        panels = [ax for ax in figs[0].axes if ax.get_label() != "<colorbar>"]
        coloured = [c for ax in panels for c in ax.collections if c.get_array() is not None]
        assert coloured and all(c.norm.vmin == lo and c.norm.vmax == hi for c in coloured)
        # the diverged trial is drawn apart, never on the colour scale
        late_xy = next((t.params["learning_rate"], t.params["reg"])
                   for t in plots.gather(engine, sweep_id).trials if t.id == late)
        assert all(tuple(xy) != late_xy for c in coloured for xy in c.get_offsets())
        stars = [c for ax in panels for c in ax.collections
                 if c.get_label().startswith("best trial")]
        assert len(stars) == 1 and stars[0].get_label() == f"best trial ({best.id})"
        assert tuple(stars[0].get_offsets()[0]) == (best.params["learning_rate"],
                                                    best.params["reg"])
        legend = {t.get_text() for ax in panels for t in ax.get_legend().get_texts()}
        assert {"stage range", "diverged", "boundary flag"} <= legend
    finally:
        _close(figs)


def test_params_draw_every_stage_range_and_readable_integer_ticks(synthetic) -> None:  # type: ignore[no-untyped-def]
    engine, sweep_id, _ = synthetic
    figs = plots.figures(engine, sweep_id)
    try:
        by_name = {ax.get_xlabel(): ax for ax in figs[1].axes if ax.axison}
        lr = by_name["learning_rate"]
        dashed = [ln for ln in lr.lines if ln.get_linestyle() == "--"]
        assert len(dashed) == 2 * 3  # low and high of each of the three stages
        hidden = by_name["hidden_size"]
        low, high = hidden.get_xlim()
        ticks = [v for v in hidden.get_xticks() if low <= v <= high]
        assert len(ticks) >= 3, ticks  # 32, 64, 128, ... not one tick per decade
        assert any(c.get_label().startswith("best trial") for c in lr.collections)
    finally:
        _close(figs)


def test_curves_rank_like_hpsweep_best_ties_by_validation_loss(synthetic) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import update

    from coordinator.report import best_rows
    from storage.models import Trial

    engine, sweep_id, _ = synthetic
    a, b = (r[0] for r in rows(engine, "SELECT id FROM trials WHERE status = 'done' "
                                       "ORDER BY id LIMIT 2"))
    with engine.begin() as conn:  # tied at the top: the lower validation loss ranks first
        conn.execute(update(Trial).where(Trial.id == a).values(best_val_acc=1.0,
                                                                best_val_loss=0.5))
        conn.execute(update(Trial).where(Trial.id == b).values(best_val_acc=1.0,
                                                                best_val_loss=0.1))
    top = [t.id for t in plots.top_trials(plots.gather(engine, sweep_id).trials, 5)]
    assert top[:2] == [b, a]
    assert top == [r["trial"] for r in best_rows(engine, sweep_id, 5)]
    figs = plots.figures(engine, sweep_id)
    try:
        labels = [ln.get_label() for ln in figs[2].axes[0].lines]
        assert labels[:2] == [f"trial {b} val", f"trial {b} train"]
    finally:
        _close(figs)
