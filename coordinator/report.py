"""Plain-text reports over the database: status, best trials, boundary warnings.

Each function reads through the storage layer and returns text that fits an
80-column terminal; the CLI prints it. The text functions take an engine or a plain
``storage.plain.Reader`` (``status`` and ``best`` read without SQLAlchemy, to start
fast); both answer the same storage calls (``_Store`` is the engine's side), so the
text is one code path. Nothing heavy is imported at module level for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from coordinator import term
from coordinator.flagtext import BoundaryFlag, flag_action, flag_message, format_value
from storage.plain import Reader

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from storage import sweeps as sweep_store

T = TypeVar("T")

STATUS_ORDER = ("queued", "running", "done", "pruned", "diverged", "failed", "cancelled")


@dataclass(frozen=True)
class Progress:
    sweep: str
    status: str
    stage_idx: int
    n_stages: int
    finished: int
    total: int
    best_val_acc: float | None


class _Store:
    """The storage calls a report makes, bound to one ORM session (``Reader``'s twin)."""

    def __init__(self, s: Session) -> None:
        from storage import sweeps, trials

        self._s, self._sweeps, self._trials = s, sweeps, trials

    def get_sweep(self, name_or_id: str | int) -> Any:
        return self._sweeps.get_sweep(self._s, name_or_id)

    def latest_sweep(self) -> Any:
        return self._sweeps.latest_sweep(self._s)

    def stages_of(self, sweep_id: int) -> list[Any]:
        return self._sweeps.stages_of(self._s, sweep_id)

    def stage_ranges(self, stage_id: int) -> dict[str, dict[str, Any]]:
        return self._sweeps.stage_ranges(self._s, stage_id)

    def flags_of(self, sweep_id: int) -> list[tuple[int, Any]]:
        return self._sweeps.flags_of(self._s, sweep_id)

    def chance_of(self, sweep_id: int) -> tuple[bool, float] | None:
        return self._sweeps.chance_of(self._s, sweep_id)

    def status_counts(self, sweep_id: int) -> dict[int, dict[str, int]]:
        return self._trials.status_counts(self._s, sweep_id)

    def best_score(self, sweep_id: int) -> float | None:
        return self._trials.best_score(self._s, sweep_id)

    def best_trials(self, sweep_id: int, stage_id: int | None = None,
                    limit: int = 1) -> list[Any]:
        return self._trials.best_trials(self._s, sweep_id, stage_id, limit)

    def is_final(self, status: str) -> bool:
        return self._trials.is_final(status)

    def stored_bytes(self, sweep_id: int) -> Any:
        from storage import retention

        return retention.stored_bytes(self._s, sweep_id)


def _read(source: Engine | Reader, work: Callable[[Any], T]) -> T:
    """``work(store)`` on a plain reader, or in one transaction of the engine."""
    if isinstance(source, Reader):
        return work(source)
    from storage.db import transact

    return transact(source, lambda s: work(_Store(s)))


def find_sweep(source: Engine | Reader, name: str | None) -> Any:
    """The sweep named (or numbered) ``name``, else the latest; None if there is none."""
    return _read(source, lambda r: r.get_sweep(name) if name else r.latest_sweep())


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
    def work(r: _Store) -> Progress:
        sweep = r.get_sweep(sweep_id)
        assert sweep is not None
        stages = [st for st in r.stages_of(sweep_id) if st.kind == "search"]
        counts = r.status_counts(sweep_id)
        total = sum(st.n_trials for st in stages)
        total += sum(sweep.config["stages"][i]["trials"] for i in range(len(stages),
                                                                          sweep.n_stages))
        search_ids = {st.id for st in stages}
        finished = sum(n for sid, c in counts.items() if sid in search_ids
                       for k, n in c.items() if r.is_final(k))
        return Progress(sweep.name, sweep.status, len(stages) - 1, sweep.n_stages, finished,
                        total, r.best_score(sweep_id))

    return _read(engine, work)


def flag_lines(s: Session, sweep_id: int, last_stage_only: bool = False) -> list[str]:
    return _flag_lines(_Store(s), sweep_id, last_stage_only)


def _flag_lines(r: _Store | Reader, sweep_id: int, last_stage_only: bool = False) -> list[str]:
    flags = r.flags_of(sweep_id)
    if last_stage_only and flags:
        last = max(idx for idx, _ in flags)
        flags = [(i, f) for i, f in flags if i == last]
    sweep = r.get_sweep(sweep_id)
    assert sweep is not None
    stages = {st.idx: st for st in r.stages_of(sweep_id) if st.kind == "search"}
    out = []
    for idx, f in flags:
        flag = BoundaryFlag(f.param, f.value, f.low, f.high, f.side, f.at_limit, f.scale,
                            f.limit, f.reason)
        out.append(f"stage {idx}: " + flag_message(flag, _flag_action(r, sweep, stages, idx,
                                                                      flag)))
    return out


def _flag_action(r: _Store | Reader, sweep: sweep_store.SweepInfo,
                 stages: dict[int, sweep_store.StageInfo], idx: int, flag: BoundaryFlag) -> str:
    """What hpsweep did about a flag (the next stage's range), or what the user can do."""
    following = stages.get(idx + 1)
    row = r.stage_ranges(following.id).get(flag.param) if following else None
    return flag_action(flag, idx, sweep.n_stages, sweep.name, row)


def chance_lines(s: Session, sweep_id: int) -> list[str]:
    """A warning when no trial of the sweep beats chance (``stages.at_chance``)."""
    return _chance_lines(_Store(s), sweep_id)


def _chance_lines(r: _Store | Reader, sweep_id: int) -> list[str]:
    chance = r.chance_of(sweep_id)
    if chance is None:
        return []
    _, threshold = chance
    best = r.best_score(sweep_id)
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


def stored_text(b: Any) -> str:
    """The sweep's stored bytes (``checkpoints``, ``curves``, ``dataset``: sizes only)."""
    total = b.checkpoints + b.curves + b.dataset
    return (f"  stored: {total / 1e6:.1f} MB (checkpoints {b.checkpoints / 1e6:.1f} MB, "
            f"curves {b.curves / 1e6:.1f} MB, dataset {b.dataset / 1e6:.1f} MB)")


def status_text(source: Engine | Reader, sweep_id: int) -> str:
    def work(r: _Store | Reader) -> str:
        sweep = r.get_sweep(sweep_id)
        assert sweep is not None
        out = [f"sweep {sweep.name} (id {sweep.id}): {sweep.status}, "
               f"{sweep.n_stages} stage(s), queue {sweep.queue}",
               stored_text(r.stored_bytes(sweep_id))]
        counts = r.status_counts(sweep_id)
        for st in r.stages_of(sweep_id):
            c = counts.get(st.id, {})
            tally = ", ".join(f"{c[k]} {k}" for k in STATUS_ORDER if c.get(k))
            label = f"stage {st.idx}" if st.kind == "search" else f"{st.kind} (ensemble)"
            out.append(f"  {label}: {st.n_trials} trials x {st.epochs} epoch(s), "
                       f"{st.status} — {tally or 'no trials'}")
            for p, row in r.stage_ranges(st.id).items():
                out.append(f"      {p:<16} {_range_text(row, p)}")
            for top in r.best_trials(sweep_id, st.id, limit=1):
                assert top.best_val_acc is not None
                carried = f" (carried from stage {st.idx - 1})" if top.parent_id else ""
                out.append(f"      best: trial {top.id}{carried}, val_acc "
                           f"{top.best_val_acc:.4f}")
        flags = _flag_lines(r, sweep_id)
        if flags:
            out.append("boundary warnings:")
            out += [f"  ! {line}" for line in flags]
        out += [f"!! {line}" for line in _chance_lines(r, sweep_id)]
        return "\n".join(out)

    return _read(source, work)


def best_rows(source: Engine | Reader, sweep_id: int, top: int) -> list[dict[str, Any]]:
    """The ``top`` best finished trials of a sweep, any stage, with their params."""
    def work(r: _Store | Reader) -> list[dict[str, Any]]:
        # ranked by the database in coordinator.rank's order: no sweep is loaded whole
        return [{"trial": t.id, "stage": t.stage_idx, "epochs": t.epochs,
                 "val_acc": t.best_val_acc, "val_loss": t.best_val_loss, **t.params}
                for t in r.best_trials(sweep_id, limit=top)]

    return _read(source, work)


def searched_params(source: Engine | Reader, sweep_id: int) -> list[str]:
    def work(r: _Store | Reader) -> list[str]:
        sweep = r.get_sweep(sweep_id)
        assert sweep is not None
        return sorted(sweep.config.get("space", {}))

    return _read(source, work)


def best_text(source: Engine | Reader, sweep_id: int, top: int) -> str:
    rows = best_rows(source, sweep_id, top)
    if not rows:
        return "no finished trials yet"
    cols = ["trial", "stage", "epochs", "val_acc", *searched_params(source, sweep_id)]
    table = [[short(r.get(c, "")) if c != "val_acc" else f"{r[c]:.4f}" for c in cols]
             for r in rows]
    return term.table(cols, table, rule=False)


def warnings_text(source: Engine | Reader, sweep_id: int) -> str:
    lines = _read(source, lambda r: _chance_lines(r, sweep_id) + _flag_lines(r, sweep_id))
    return "\n".join(f"warning: {line}" for line in lines)


def resume_note(engine: Engine, sweep_id: int) -> str:
    """Why ``resume`` does nothing for a sweep that is not running, and what does."""
    sweep = _read(engine, lambda r: r.get_sweep(sweep_id))
    assert sweep is not None
    if sweep.status == "running":
        return ""
    return (f"sweep {sweep.name} is {sweep.status}: resume only re-enqueues the unfinished "
            f"work of running sweeps. To continue it, `hpsweep extend {sweep.name}` adds a "
            "stage planned from the trials that finished (its flags followed).")
