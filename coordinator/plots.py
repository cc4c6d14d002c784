"""``hpsweep plot``: four PNG views of a sweep (matplotlib, Agg backend, no display).

1. ``1_lr_reg.png``: learning rate against regularisation, log axes, coloured by
   validation accuracy on a scale fitted to the data, one panel per search stage with that
   stage's range as a box and its flagged edges in red, the best trial starred, diverged,
   failed and cancelled trials apart (a legend says which is which);
2. ``2_params.png``: validation accuracy against each numeric searched parameter,
   every stage's range edges drawn, boundary-flagged parameters and the best trial marked;
3. ``3_curves.png``: training and validation curves of the top trials (ranked as
   ``hpsweep best`` ranks them), diverged trials in a panel of their own;
4. ``4_best_so_far.png``: best validation accuracy against trials completed.

matplotlib is an optional extra, imported only here and only when plotting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator.rank import TrialOutcome, is_scored, rank
from storage import history
from storage import sweeps as sweep_store
from storage import trials as trial_store
from storage.db import transact
from storage.models import StageKind

if TYPE_CHECKING:  # matplotlib is optional: imported when a plot is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PNG_NAMES = ("1_lr_reg.png", "2_params.png", "3_curves.png", "4_best_so_far.png")
TOP_CURVES = 5
MAX_DIVERGED = 20


class PlotError(RuntimeError):
    """Plotting is impossible here (e.g. matplotlib missing); the message says what to do."""


@dataclass(frozen=True)
class SweepView:
    """Everything the plots read, gathered in one transaction."""

    name: str
    stages: list[sweep_store.StageInfo]  # search stages only
    ranges: dict[int, dict[str, dict[str, Any]]]  # stage id -> param -> range row
    trials: list[trial_store.TrialRow]  # trials of the search stages
    flags: list[tuple[int, sweep_store.FlagRow]]
    curves: dict[int, list[history.CurvePoint]]  # top and diverged trials only
    order: list[int]  # finished trial ids in finishing order


def _pyplot() -> ModuleType:
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plots need matplotlib: pip install -e '.[plot]' "
                        "in a clone of hpsweep") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def gather(engine: Engine, sweep_id: int) -> SweepView:
    def work(s: Session) -> SweepView:
        sweep = sweep_store.get_sweep(s, sweep_id)
        assert sweep is not None
        stages = [st for st in sweep_store.stages_of(s, sweep_id)
                  if st.kind == StageKind.SEARCH.value]
        ids = {st.id for st in stages}
        trials = [t for t in trial_store.trials_of(s, sweep_id) if t.stage_id in ids]
        shown = [t.id for t in top_trials(trials, TOP_CURVES)]
        shown += [t.id for t in trials if t.status == "diverged"][:MAX_DIVERGED]
        return SweepView(sweep.name, stages,
                         {st.id: sweep_store.stage_ranges(s, st.id) for st in stages}, trials,
                         sweep_store.flags_of(s, sweep_id), history.curves_of(s, shown),
                         [t for t in history.finish_order(s, sweep_id)
                          if t in {x.id for x in trials}])

    return transact(engine, work)


def top_trials(trials: list[trial_store.TrialRow], n: int) -> list[trial_store.TrialRow]:
    """The ``n`` best scored trials in ``hpsweep best``'s order (``coordinator.rank``:
    accuracy, ties by lower validation loss, then id)."""
    by_id = {t.id: t for t in trials}
    ranked = rank(TrialOutcome(t.id, t.status, t.best_val_acc, t.best_val_loss) for t in trials)
    return [by_id[o.trial_id] for o in ranked if is_scored(o)][:n]


def is_plotted_score(t: trial_store.TrialRow) -> bool:
    """Coloured by its accuracy: a ``done`` trial with a score. A trial that diverged
    after a good first epoch keeps that epoch's ``best_val_acc`` but is drawn apart."""
    return t.status == "done" and t.best_val_acc is not None


def accuracy_range(trials: list[trial_store.TrialRow]) -> tuple[float, float]:
    """The colour scale: fitted to the scored trials (a fixed 0-1 scale paints every
    late-stage point the same colour)."""
    accs = [t.best_val_acc for t in trials if is_plotted_score(t) and t.best_val_acc is not None]
    if not accs:
        return 0.0, 1.0
    lo, hi = min(accs), max(accs)
    return (lo - 0.005, hi + 0.005) if hi - lo < 1e-9 else (lo, hi)


def best_so_far(accs: list[float | None]) -> list[float | None]:
    """Running maximum, None until the first score."""
    out: list[float | None] = []
    best: float | None = None
    for a in accs:
        if a is not None and (best is None or a > best):
            best = a
        out.append(best)
    return out


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def numeric_params(view: SweepView) -> list[str]:
    """Searched parameters whose values are numbers (first stage's ranges, in name order)."""
    if not view.stages:
        return []
    first = view.ranges[view.stages[0].id]
    return [p for p in first if any(_num(t.params.get(p)) is not None for t in view.trials)]


def _scale_of(view: SweepView, param: str) -> str:
    if view.stages and param in view.ranges[view.stages[0].id]:
        return view.ranges[view.stages[0].id][param]["scale"]
    return "linear"


# ---------------------------------------------------------------- the four figures


def _lr_reg(plt: ModuleType, view: SweepView) -> Figure:
    n = max(1, len(view.stages))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 1, 4.4), squeeze=False, sharex=True,
                             sharey=True)
    vmin, vmax = accuracy_range(view.trials)
    best = top_trials(view.trials, 1)
    scatter = None
    for ax, st in zip(axes[0], view.stages or [None], strict=True):
        rows = [t for t in view.trials if st is None or t.stage_id == st.id]
        pts = [(t, _num(t.params.get("learning_rate")), _num(t.params.get("reg"))) for t in rows]
        pts = [(t, x, y) for t, x, y in pts if x and y and x > 0 and y > 0]
        good = [(t, x, y) for t, x, y in pts if is_plotted_score(t)]
        if good:
            scatter = ax.scatter([p[1] for p in good], [p[2] for p in good],
                                 c=[p[0].best_val_acc for p in good], cmap="viridis", vmin=vmin,
                                 vmax=vmax, s=22, edgecolors="k", linewidths=0.3)
        for statuses, style in UNSCORED_STYLES:
            bad = [(x, y) for t, x, y in pts if t.status in statuses]
            if bad:
                ax.scatter([p[0] for p in bad], [p[1] for p in bad], s=20, **style)
        top = [(x, y) for t, x, y in pts if best and t.id == best[0].id]
        if top:
            ax.scatter(*zip(*top, strict=True), marker="*", s=220, facecolors="none",
                       edgecolors="k", linewidths=1.3, label=f"best trial ({best[0].id})",
                       zorder=5)
        if st is not None:
            _range_box(ax, view.ranges[st.id], [f for idx, f in view.flags if idx == st.idx])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning_rate")
        ax.set_title(f"stage {st.idx}: {len(rows)} trials x {st.epochs} ep" if st else "no stage",
                     fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower left", fontsize=6)
    axes[0][0].set_ylabel("reg")
    if scatter is not None:
        fig.colorbar(scatter, ax=list(axes[0]), label="validation accuracy (fitted scale)")
    fig.suptitle(f"{view.name}: learning rate vs regularisation, coarse to fine")
    return fig


UNSCORED_STYLES = (  # trials without a comparable score, drawn apart from the colour scale
    (("pruned",), {"marker": "v", "c": "tab:orange", "label": "pruned"}),
    (("diverged",), {"marker": "x", "c": "tab:red", "label": "diverged"}),
    (("failed", "cancelled"), {"marker": "x", "c": "0.55", "label": "failed / cancelled"}),
)


def _range_box(ax: Axes, ranges: dict[str, dict[str, Any]],
               flags: list[sweep_store.FlagRow]) -> None:
    lr, reg = ranges.get("learning_rate"), ranges.get("reg")
    if not lr or not reg or lr["low"] is None or reg["low"] is None:
        return
    if min(lr["low"], reg["low"]) <= 0:
        return
    x0, x1, y0, y1 = lr["low"], lr["high"], reg["low"], reg["high"]
    ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], color="tab:blue", lw=1.2,
            label="stage range")
    label = "boundary flag"
    for f in flags:  # the edge where this stage's best sat, in red
        if f.param not in ("learning_rate", "reg"):
            continue
        edge = f.low if f.side == "low" else f.high
        xs, ys = ([edge, edge], [y0, y1]) if f.param == "learning_rate" else ([x0, x1],
                                                                              [edge, edge])
        ax.plot(xs, ys, color="tab:red", lw=3, label=label)
        label = "_nolegend_"


def _params(plt: ModuleType, view: SweepView) -> Figure:
    params = numeric_params(view) or ["(none)"]
    cols = min(3, len(params))
    nrows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.3 * cols, 3.4 * nrows + 0.9),
                             squeeze=False)
    flagged: dict[str, list[sweep_store.FlagRow]] = {}
    for _, f in view.flags:
        flagged.setdefault(f.param, []).append(f)
    best = top_trials(view.trials, 1)
    for i, ax in enumerate(axes.flat):
        if i >= len(params) or params[i] == "(none)":
            ax.axis("off")
            continue
        p = params[i]
        for k, st in enumerate(view.stages):
            rows = [t for t in view.trials if t.stage_id == st.id and is_plotted_score(t)
                    and _num(t.params.get(p)) is not None]
            ax.scatter([_num(t.params[p]) for t in rows], [t.best_val_acc for t in rows], s=14,
                       color=f"C{k}", label=f"stage {st.idx}", alpha=0.8)
            _range_edges(ax, view.ranges[st.id].get(p, {}), f"C{k}", f"stage {st.idx} range")
        for j, f in enumerate(flagged.get(p, [])):
            ax.axvline(f.value, color="tab:red", lw=1.5,
                       label="boundary-flagged best" if j == 0 else "_nolegend_")
        if best and _num(best[0].params.get(p)) is not None:
            ax.scatter([_num(best[0].params[p])], [best[0].best_val_acc], marker="*", s=200,
                       facecolors="none", edgecolors="k", linewidths=1.2, zorder=5,
                       label=f"best trial ({best[0].id})")
        if _scale_of(view, p) == "log":
            _log_axis(ax, _is_integer(view, p))
        title = p + ("  ⚠ boundary: " + ", ".join(sorted({f.side for f in flagged[p]}))
                     if p in flagged else "")
        ax.set_title(title, fontsize=9, color="tab:red" if p in flagged else "black")
        ax.set_xlabel(p)
        ax.set_ylabel("validation accuracy")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels) or 1), fontsize=7)
    fig.suptitle(f"{view.name}: validation accuracy vs each parameter "
                 "(dashed: each stage's range; red: boundary-flagged best)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def _range_edges(ax: Axes, row: dict[str, Any], color: str, label: str) -> None:
    for v in (row.get("low"), row.get("high")):
        if v is not None:
            ax.axvline(v, color=color, ls="--", lw=1, alpha=0.8, label=label)
            label = "_nolegend_"


def _is_integer(view: SweepView, param: str) -> bool:
    return bool(view.stages and view.ranges[view.stages[0].id].get(param, {}).get("integer"))


def _log_axis(ax: Axes, integer: bool) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())  # minor labels of a narrow log range overlap
    if integer:  # hidden_size 16..512: a tick per power of two, not one per decade
        ax.xaxis.set_major_locator(LogLocator(base=2))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _curves(plt: ModuleType, view: SweepView) -> Figure:
    fig, (ax, ax_div) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, t in enumerate(top_trials(view.trials, TOP_CURVES)):
        pts = view.curves.get(t.id, [])
        color = f"C{i}"
        ax.plot([c.epoch for c in pts], [c.val_acc for c in pts], color=color, lw=1.6,
                label=f"trial {t.id} val")
        ax.plot([c.epoch for c in pts], [c.train_acc for c in pts], color=color, lw=1, ls="--",
                label=f"trial {t.id} train")
    ax.set_title(f"top {TOP_CURVES} trials: train (dashed) vs validation (solid)", fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    if ax.lines:
        ax.legend(fontsize=6, ncol=2)
    diverged = [t for t in view.trials if t.status == "diverged"][:MAX_DIVERGED]
    for t in diverged:
        pts = [c for c in view.curves.get(t.id, []) if c.train_loss is not None
               and math.isfinite(c.train_loss) and c.train_loss > 0]
        ax_div.plot([c.epoch for c in pts], [c.train_loss for c in pts], marker="o", ms=3,
                    color="tab:red", alpha=0.6)
    if diverged:
        ax_div.set_yscale("log")
    else:
        ax_div.text(0.5, 0.5, "no diverged trials", ha="center", va="center",
                    transform=ax_div.transAxes)
    ax_div.set_title(f"diverged trials ({len(diverged)}), drawn apart", fontsize=10)
    ax_div.set_xlabel("epoch")
    ax_div.set_ylabel("training loss")
    fig.suptitle(f"{view.name}: learning curves (watch the train/val gap)")
    fig.tight_layout()
    return fig


def _best_so_far(plt: ModuleType, view: SweepView) -> Figure:
    acc = {t.id: t.best_val_acc if t.status == "done" else None for t in view.trials}
    accs = [acc.get(t) for t in view.order]
    xs = list(range(1, len(accs) + 1))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.scatter([x for x, a in zip(xs, accs, strict=True) if a is not None],
               [a for a in accs if a is not None], s=10, c="0.6", label="trial")
    ax.step(xs, best_so_far(accs), where="post", color="tab:blue", lw=2, label="best so far")
    ax.set_xlabel("trials completed")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{view.name}: best validation accuracy so far")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def figures(engine: Engine, sweep_id: int) -> list[Figure]:
    """The four matplotlib figures, in ``PNG_NAMES`` order (close them when done)."""
    plt = _pyplot()
    view = gather(engine, sweep_id)
    return [draw(plt, view) for draw in (_lr_reg, _params, _curves, _best_so_far)]


def write_plots(engine: Engine, sweep_id: int, out_dir: str | Path) -> list[Path]:
    """Write the four PNGs into ``out_dir`` (created if needed); returns their paths."""
    out = Path(out_dir)
    plt = _pyplot()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlotError(f"cannot create {out}: {exc.strerror or exc}") from None
    paths = [out / name for name in PNG_NAMES]
    for fig, path in zip(figures(engine, sweep_id), paths, strict=True):
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return paths
