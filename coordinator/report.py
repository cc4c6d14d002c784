"""Plain-text reports over the database: status, best trials, boundary warnings.

Each function reads through the storage layer and returns text that fits an
80-column terminal; the CLI prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator.refine import BoundaryFlag, flag_action, flag_message, format_value
from storage import retention as retention_store
from storage import sweeps as sweep_store
from storage import trials as trial_store
from storage.db import transact

STATUS_ORDER = ("queued", "running", "done", "diverged", "failed", "cancelled")


@dataclass(frozen=True)
class Progress:
    sweep: str
    status: str
    stage_idx: int
    n_stages: int
    finished: int
    total: int
    best_val_acc: float | None


def short(value: Any) -> str:
    """Compact numbers: 3 significant digits, e-notation for tiny or huge ones."""
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            return f"{value:.2e}"
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(short(v) for v in value) + "]"
    return str(value)


def progress(engine: Engine, sweep_id: int) -> Progress:
    def work(s: Session) -> Progress:
        sweep = sweep_store.get_sweep(s, sweep_id)
        assert sweep is not None
        stages = [st for st in sweep_store.stages_of(s, sweep_id) if st.kind == "search"]
        counts = trial_store.status_counts(s, sweep_id)
        total = sum(st.n_trials for st in stages)
        total += sum(sweep.config["stages"][i]["trials"] for i in range(len(stages),
                                                                          sweep.n_stages))
        search_ids = {st.id for st in stages}
        finished = sum(n for sid, c in counts.items() if sid in search_ids
                       for k, n in c.items() if trial_store.is_final(k))
        return Progress(sweep.name, sweep.status, len(stages) - 1, sweep.n_stages, finished,
                        total, trial_store.best_score(s, sweep_id))

    return transact(engine, work)


def flag_lines(s: Session, sweep_id: int, last_stage_only: bool = False) -> list[str]:
    flags = sweep_store.flags_of(s, sweep_id)
    if last_stage_only and flags:
        last = max(idx for idx, _ in flags)
        flags = [(i, f) for i, f in flags if i == last]
    sweep = sweep_store.get_sweep(s, sweep_id)
    assert sweep is not None
    stages = {st.idx: st for st in sweep_store.stages_of(s, sweep_id) if st.kind == "search"}
    out = []
    for idx, f in flags:
        flag = BoundaryFlag(f.param, f.value, f.low, f.high, f.side, f.at_limit, f.scale,
                            f.limit, f.reason)
        out.append(f"stage {idx}: " + flag_message(flag, _flag_action(s, sweep, stages, idx,
                                                                      flag)))
    return out


def _flag_action(s: Session, sweep: sweep_store.SweepInfo,
                 stages: dict[int, sweep_store.StageInfo], idx: int, flag: BoundaryFlag) -> str:
    """What hpsweep did about a flag (the next stage's range), or what the user can do."""
    following = stages.get(idx + 1)
    row = sweep_store.stage_ranges(s, following.id).get(flag.param) if following else None
    return flag_action(flag, idx, sweep.n_stages, sweep.name, row)


def chance_lines(s: Session, sweep_id: int) -> list[str]:
    """A warning when no trial of the sweep beats chance (``stages.at_chance``)."""
    chance = sweep_store.chance_of(s, sweep_id)
    if chance is None:
        return []
    _, threshold = chance
    best = trial_store.best_score(s, sweep_id)
    if best is not None and best > threshold:
        return []
    got = "no trial finished with a score" if best is None else f"best val_acc {best:.4f}"
    return [f"NO TRIAL BEATS CHANCE: {got}, not above {threshold:.4f} (guessing one class, "
            "plus 3 standard deviations on the validation rows). Nothing learned: look at "
            "the learning rate first (far too low: losses barely move; far too high: trials "
            "diverge), then the data and its labels. Recorded in stages.at_chance."]


def _range_text(row: dict[str, Any], param: str = "", brackets_only: bool = False) -> str:
    if row["scale"] == "choice":
        return "{" + row["choices"].strip("[]") + "}"
    def fmt(x: float) -> str:
        return str(round(x)) if row.get("integer") else format_value(param, x, row["scale"])

    text = f"[{fmt(row['low'])}, {fmt(row['high'])}]"
    return text if brackets_only or row["scale"] != "log" else text + " log"


def stored_text(s: Session, sweep_id: int) -> str:
    """The sweep's stored bytes (sizes only: no blob is read)."""
    b = retention_store.stored_bytes(s, sweep_id)
    return (f"  stored: {b.total / 1e6:.1f} MB (checkpoints {b.checkpoints / 1e6:.1f} MB, "
            f"curves {b.curves / 1e6:.1f} MB, dataset {b.dataset / 1e6:.1f} MB)")


def status_text(engine: Engine, sweep_id: int) -> str:
    def work(s: Session) -> str:
        sweep = sweep_store.get_sweep(s, sweep_id)
        assert sweep is not None
        out = [f"sweep {sweep.name} (id {sweep.id}): {sweep.status}, "
               f"{sweep.n_stages} stage(s), queue {sweep.queue}", stored_text(s, sweep_id)]
        counts = trial_store.status_counts(s, sweep_id)
        for st in sweep_store.stages_of(s, sweep_id):
            c = counts.get(st.id, {})
            tally = ", ".join(f"{c[k]} {k}" for k in STATUS_ORDER if c.get(k))
            label = f"stage {st.idx}" if st.kind == "search" else f"{st.kind} (ensemble)"
            out.append(f"  {label}: {st.n_trials} trials x {st.epochs} epoch(s), "
                       f"{st.status} — {tally or 'no trials'}")
            for p, row in sweep_store.stage_ranges(s, st.id).items():
                out.append(f"      {p:<16} {_range_text(row, p)}")
            for top in trial_store.best_trials(s, sweep_id, st.id, limit=1):
                assert top.best_val_acc is not None
                carried = f" (carried from stage {st.idx - 1})" if top.parent_id else ""
                out.append(f"      best: trial {top.id}{carried}, val_acc "
                           f"{top.best_val_acc:.4f}")
        flags = flag_lines(s, sweep_id)
        if flags:
            out.append("boundary warnings:")
            out += [f"  ! {line}" for line in flags]
        out += [f"!! {line}" for line in chance_lines(s, sweep_id)]
        return "\n".join(out)

    return transact(engine, work)


def best_rows(engine: Engine, sweep_id: int, top: int) -> list[dict[str, Any]]:
    """The ``top`` best finished trials of a sweep, any stage, with their params."""
    def work(s: Session) -> list[dict[str, Any]]:
        # ranked by the database in coordinator.rank's order: no sweep is loaded whole
        return [{"trial": t.id, "stage": t.stage_idx, "epochs": t.epochs,
                 "val_acc": t.best_val_acc, "val_loss": t.best_val_loss, **t.params}
                for t in trial_store.best_trials(s, sweep_id, limit=top)]

    return transact(engine, work)


def searched_params(engine: Engine, sweep_id: int) -> list[str]:
    def work(s: Session) -> list[str]:
        sweep = sweep_store.get_sweep(s, sweep_id)
        assert sweep is not None
        return sorted(sweep.config.get("space", {}))

    return transact(engine, work)


def best_text(engine: Engine, sweep_id: int, top: int) -> str:
    rows = best_rows(engine, sweep_id, top)
    if not rows:
        return "no finished trials yet"
    cols = ["trial", "stage", "epochs", "val_acc", *searched_params(engine, sweep_id)]
    table = [[short(r.get(c, "")) if c != "val_acc" else f"{r[c]:.4f}" for c in cols]
             for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)) for t in table]
    return "\n".join(lines)


def warnings_text(engine: Engine, sweep_id: int) -> str:
    lines = transact(engine, lambda s: chance_lines(s, sweep_id) + flag_lines(s, sweep_id))
    return "\n".join(f"warning: {line}" for line in lines)


def resume_note(engine: Engine, sweep_id: int) -> str:
    """Why ``resume`` does nothing for a sweep that is not running, and what does."""
    sweep = transact(engine, lambda s: sweep_store.get_sweep(s, sweep_id))
    assert sweep is not None
    if sweep.status == "running":
        return ""
    return (f"sweep {sweep.name} is {sweep.status}: resume only re-enqueues the unfinished "
            f"work of running sweeps. To continue it, `hpsweep extend {sweep.name}` adds a "
            "stage planned from the trials that finished (its flags followed).")
