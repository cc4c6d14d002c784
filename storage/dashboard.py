"""Read-only queries behind the web dashboard, shaped for what its charts draw.

Every function takes a ``Session`` first, returns plain JSON-ready values and
binds every value it gets from a request (ids, parameter names) as a parameter.
A sweep of 50,000 trials must answer in well under a second, so counts and
maxima are aggregated in SQL, tables are limited, and scatter points are a
deterministic sample (every k-th trial, plus the best ones) capped at
``MAX_POINTS``. Checkpoint blobs are never read.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, select
from sqlalchemy.orm import Session

from storage.models import (
    FINAL_TRIAL_STATUSES,
    BoundaryFlag,
    Checkpoint,
    Curve,
    Ensemble,
    Param,
    Stage,
    StageKind,
    StageRange,
    Sweep,
    Trial,
    TrialStatus,
)
from storage.sweeps import param_value

MAX_POINTS = 4000  # scatter / parallel-coordinates points sent for one sweep
TOP_ALWAYS = 50  # best trials always among the points, whatever the sampling
MAX_CURVES = 20  # trials whose curves one request may ask for
UNSCORED = (TrialStatus.DIVERGED.value, TrialStatus.FAILED.value, TrialStatus.CANCELLED.value)
_RANKED = (Trial.best_val_acc.desc(), Trial.best_val_loss.is_(None), Trial.best_val_loss.asc(),
           Trial.id.asc())  # storage.trials.best_trials' order, i.e. `hpsweep best`'s


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(sep=" ", timespec="seconds") if value is not None else None


# ------------------------------------------------------------------ change tokens


def sweeps_version(s: Session) -> list[Any]:
    """A cheap token that changes when any sweep or trial changes status (index-only)."""
    head = s.execute(select(func.count(Sweep.id), func.max(Sweep.id),
                            func.count(Sweep.finished_at))).one()
    counts = s.execute(select(Trial.status, func.count()).group_by(Trial.status)
                       .order_by(Trial.status)).all()
    return [list(head), [list(r) for r in counts]]


def sweep_version(s: Session, sweep_id: int) -> list[Any] | None:
    """A token that changes when a trial of the sweep changes status, or a stage, flag
    or ensemble is added, or the sweep ends; None for an unknown sweep."""
    status = s.scalar(select(Sweep.status).where(Sweep.id == sweep_id))
    if status is None:
        return None
    counts = s.execute(select(Trial.status, func.count()).where(Trial.sweep_id == sweep_id)
                       .group_by(Trial.status).order_by(Trial.status)).all()
    extra = [s.scalar(select(func.count()).select_from(table).where(table.sweep_id == sweep_id))
             for table in (Stage, BoundaryFlag, Ensemble)]
    return [status, [list(r) for r in counts], extra]


def trial_version(s: Session, trial_id: int) -> list[Any] | None:
    """A token that changes with the trial's status and each epoch it records."""
    row = s.execute(select(Trial.status, Trial.attempts).where(Trial.id == trial_id)).first()
    if row is None:
        return None
    last = s.scalar(select(func.max(Curve.epoch)).where(Curve.trial_id == trial_id))
    return [row.status, row.attempts, last]


# ------------------------------------------------------------------ sweeps page


def sweep_list(s: Session) -> list[dict[str, Any]]:
    """Every sweep, newest first, with progress, best accuracy and flag count."""
    final: dict[int, int] = {}
    rows = s.execute(select(Trial.sweep_id, Trial.status, func.count())
                     .join(Stage, Stage.id == Trial.stage_id)
                     .where(Stage.kind == StageKind.SEARCH.value)
                     .group_by(Trial.sweep_id, Trial.status))
    for sweep_id, status, n in rows:
        if status in FINAL_TRIAL_STATUSES:
            final[sweep_id] = final.get(sweep_id, 0) + n
    planned = dict(s.execute(select(Stage.sweep_id, func.sum(Stage.n_trials))
                             .where(Stage.kind == StageKind.SEARCH.value)
                             .group_by(Stage.sweep_id)).all())
    created = dict(s.execute(select(Stage.sweep_id, func.count())
                             .where(Stage.kind == StageKind.SEARCH.value)
                             .group_by(Stage.sweep_id)).all())
    best = dict(s.execute(select(Trial.sweep_id, func.max(Trial.best_val_acc))
                          .where(Trial.status == TrialStatus.DONE.value)
                          .group_by(Trial.sweep_id)).all())
    flags = dict(s.execute(select(BoundaryFlag.sweep_id, func.count())
                           .group_by(BoundaryFlag.sweep_id)).all())
    out = []
    for sw in s.execute(select(Sweep.id, Sweep.name, Sweep.status, Sweep.config, Sweep.n_stages,
                               Sweep.created_at, Sweep.finished_at).order_by(Sweep.id.desc())):
        total = int(planned.get(sw.id) or 0) + _unplanned_trials(sw.config,
                                                                 created.get(sw.id, 0))
        out.append({"id": sw.id, "name": sw.name, "status": sw.status,
                    "final": final.get(sw.id, 0), "total": total,
                    "stages": created.get(sw.id, 0), "n_stages": sw.n_stages,
                    "best_val_acc": best.get(sw.id), "flags": flags.get(sw.id, 0),
                    "created_at": _iso(sw.created_at), "finished_at": _iso(sw.finished_at)})
    return out


def _unplanned_trials(config_text: str, n_created: int) -> int:
    """Trials of the stages the config plans that do not exist yet."""
    try:
        stages = json.loads(config_text).get("stages", [])
        return sum(int(st.get("trials", 0)) for st in stages[n_created:])
    except (ValueError, AttributeError, TypeError):
        return 0  # an odd config must not break the listing


# ------------------------------------------------------------------ sweep page


def sweep_header(s: Session, sweep_id: int) -> dict[str, Any] | None:
    row = s.execute(select(Sweep.id, Sweep.name, Sweep.status, Sweep.config, Sweep.n_stages,
                           Sweep.created_at, Sweep.finished_at)
                    .where(Sweep.id == sweep_id)).first()
    if row is None:
        return None
    return {"id": row.id, "name": row.name, "status": row.status, "n_stages": row.n_stages,
            "config": row.config, "created_at": _iso(row.created_at),
            "finished_at": _iso(row.finished_at)}


def stage_rows(s: Session, sweep_id: int) -> list[dict[str, Any]]:
    """Stages in order with their ranges, trial counts by status and best trial."""
    stages = s.execute(select(Stage).where(Stage.sweep_id == sweep_id)
                       .order_by(Stage.idx)).scalars().all()
    ids = [st.id for st in stages]
    ranges: dict[int, dict[str, Any]] = {i: {} for i in ids}
    for r in s.scalars(select(StageRange).where(StageRange.stage_id.in_(
            bindparam("ids", expanding=True))).order_by(StageRange.param), {"ids": ids}):
        ranges[r.stage_id][r.param] = {
            "low": r.low, "high": r.high, "scale": r.scale, "integer": r.integer,
            "choices": json.loads(r.choices) if r.choices else None}
    counts: dict[int, dict[str, int]] = {i: {} for i in ids}
    # by stage id, not sweep id: ix_trials_stage_status_acc answers without the table
    for stage_id, status, n in s.execute(
            select(Trial.stage_id, Trial.status, func.count())
            .where(Trial.stage_id.in_(bindparam("ids", expanding=True)))
            .group_by(Trial.stage_id, Trial.status), {"ids": ids}):
        counts[stage_id][status] = n
    return [{"id": st.id, "idx": st.idx, "kind": st.kind, "epochs": st.epochs,
             "n_trials": st.n_trials, "status": st.status, "ranges": ranges[st.id],
             "counts": counts[st.id], "best": _stage_best(s, st.id)} for st in stages]


def _stage_best(s: Session, stage_id: int) -> dict[str, Any] | None:
    row = s.execute(select(Trial.id, Trial.best_val_acc)
                    .where(Trial.stage_id == stage_id, Trial.status == TrialStatus.DONE.value,
                           Trial.best_val_acc.is_not(None))
                    .order_by(*_RANKED).limit(1)).first()
    return {"id": row.id, "val_acc": row.best_val_acc} if row else None


def flag_rows(s: Session, sweep_id: int) -> list[dict[str, Any]]:
    rows = s.execute(select(Stage.idx, BoundaryFlag).join(Stage, Stage.id == BoundaryFlag.stage_id)
                     .where(BoundaryFlag.sweep_id == sweep_id)
                     .order_by(Stage.idx, BoundaryFlag.param))
    return [{"stage": idx, "param": f.param, "value": f.value, "low": f.low, "high": f.high,
             "side": f.side, "at_limit": f.at_limit, "scale": f.scale,
             "limit": f.hard_limit or ""} for idx, f in rows]


def ensemble_rows(s: Session, sweep_id: int) -> list[dict[str, Any]]:
    rows = s.scalars(select(Ensemble).where(Ensemble.sweep_id == sweep_id).order_by(Ensemble.id))
    out = []
    for e in rows:
        try:
            members = len(json.loads(e.members))
        except ValueError:
            members = None
        gain = (e.val_acc - e.single_val_acc
                if e.val_acc is not None and e.single_val_acc is not None else None)
        out.append({"id": e.id, "method": e.method, "members": members, "val_acc": e.val_acc,
                    "test_acc": e.test_acc, "single_val_acc": e.single_val_acc,
                    "single_test_acc": e.single_test_acc, "gain": gain,
                    "created_at": _iso(e.created_at)})
    return out


def top_trials(s: Session, sweep_id: int, limit: int = 100) -> list[dict[str, Any]]:
    """The ``limit`` best done trials, ranked as ``hpsweep best`` ranks them."""
    rows = s.execute(select(Trial.id, Stage.idx, Trial.best_val_acc, Trial.best_val_loss,
                            Trial.best_epoch, Trial.epochs, Trial.parent_id)
                     .join(Stage, Stage.id == Trial.stage_id)
                     .where(Trial.sweep_id == sweep_id, Trial.status == TrialStatus.DONE.value,
                            Trial.best_val_acc.is_not(None))
                     .order_by(*_RANKED).limit(limit)).all()
    params = params_of(s, [r.id for r in rows])
    return [{"rank": i + 1, "id": r.id, "stage": r.idx, "val_acc": r.best_val_acc,
             "val_loss": r.best_val_loss, "best_epoch": r.best_epoch, "epochs": r.epochs,
             "carried": r.parent_id is not None, "params": params[r.id]}
            for i, r in enumerate(rows)]


def unscored_trials(s: Session, sweep_id: int, limit: int = 100) -> dict[str, Any]:
    """Diverged, failed and cancelled trials: counts, and the latest ``limit`` of them."""
    counts = dict(s.execute(select(Trial.status, func.count())
                            .where(Trial.sweep_id == sweep_id, Trial.status.in_(UNSCORED))
                            .group_by(Trial.status)).all())
    rows = s.execute(select(Trial.id, Stage.idx, Trial.status, Trial.attempts, Trial.error,
                            Trial.finished_at)
                     .join(Stage, Stage.id == Trial.stage_id)
                     .where(Trial.sweep_id == sweep_id, Trial.status.in_(UNSCORED))
                     .order_by(Trial.id.desc()).limit(limit)).all()
    return {"counts": counts,
            "rows": [{"id": r.id, "stage": r.idx, "status": r.status, "attempts": r.attempts,
                      "error": _last_line(r.error),
                      "finished_at": _iso(r.finished_at)} for r in rows]}


def _last_line(error: str | None) -> str:
    """The line of a traceback that says what went wrong (its last), shortened."""
    lines = (error or "").strip().splitlines()
    return lines[-1][:300] if lines else ""


def best_so_far(s: Session, sweep_id: int) -> dict[str, Any]:
    """The best validation accuracy against trials finished, as the steps where it rose
    (all a step chart needs), found by window functions in the database: a sweep of
    50,000 trials sends a few dozen rows, not 50,000."""
    order = (Trial.finished_at, Trial.id)
    scored = case((Trial.status == TrialStatus.DONE.value, Trial.best_val_acc))
    ranked = (select(func.row_number().over(order_by=order).label("n"),
                     scored.label("acc"),
                     func.max(scored).over(order_by=order, rows=(None, -1)).label("before"))
              .where(Trial.sweep_id == sweep_id, Trial.status.in_(FINAL_TRIAL_STATUSES))
              .subquery())
    rows = s.execute(select(ranked.c.n, ranked.c.acc).where(
        ranked.c.acc.is_not(None),
        (ranked.c.before.is_(None)) | (ranked.c.acc > ranked.c.before))
        .order_by(ranked.c.n)).all()
    steps = [[int(n), acc] for n, acc in rows]
    finished = s.scalar(select(func.count()).select_from(Trial).where(
        Trial.sweep_id == sweep_id, Trial.status.in_(FINAL_TRIAL_STATUSES))) or 0
    if steps and steps[-1][0] != finished:
        steps.append([finished, steps[-1][1]])
    return {"finished": finished, "steps": steps}


def scatter_points(s: Session, sweep_id: int, cap: int = MAX_POINTS) -> dict[str, Any]:
    """Finished trials with their parameters for the scatter and parallel coordinates:
    all of them up to ``cap``, else every k-th by id plus the ``TOP_ALWAYS`` best."""
    n = s.scalar(select(func.count()).select_from(Trial).where(
        Trial.sweep_id == sweep_id, Trial.status.in_(FINAL_TRIAL_STATUSES))) or 0
    step = max(1, -(-n // cap))
    top = list(s.scalars(select(Trial.id).where(Trial.sweep_id == sweep_id,
                                                Trial.status == TrialStatus.DONE.value,
                                                Trial.best_val_acc.is_not(None))
                         .order_by(*_RANKED).limit(TOP_ALWAYS)))
    q = (select(Trial.id, Stage.idx, Trial.status, Trial.best_val_acc, Trial.parent_id)
         .join(Stage, Stage.id == Trial.stage_id)
         .where(Trial.sweep_id == sweep_id, Trial.status.in_(FINAL_TRIAL_STATUSES)))
    if step > 1:
        q = q.where(Trial.id.in_(bindparam("top", expanding=True)) | (Trial.id % step == 0))
    rows = s.execute(q.order_by(Trial.id), {"top": top or [-1]} if step > 1 else {}).all()
    params = params_of(s, [r.id for r in rows])
    points = [[r.id, r.idx, r.status, r.best_val_acc, r.parent_id is not None, params[r.id]]
              for r in rows]
    return {"total": n, "step": step, "best": top[0] if top else None,
            "columns": ["id", "stage", "status", "val_acc", "carried", "params"],
            "points": points}


def params_of(s: Session, trial_ids: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {t: {} for t in trial_ids}
    for chunk in range(0, len(trial_ids), 5000):  # keep each IN list a sane size
        ids = trial_ids[chunk:chunk + 5000]
        stmt = select(Param.trial_id, Param.name, Param.value, Param.value_text).where(
            Param.trial_id.in_(bindparam("ids", expanding=True)))
        for trial_id, name, value, text in s.execute(stmt, {"ids": ids}):
            out[trial_id][name] = param_value(value, text)
    return out


# ------------------------------------------------------------------ trials


def curves(s: Session, trial_ids: list[int]) -> dict[int, dict[str, list[Any]]]:
    """trial id -> column-wise curves (epoch, losses, accuracies, EMA, lr)."""
    names = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "ema_val_loss",
             "ema_val_acc", "lr")
    out: dict[int, dict[str, list[Any]]] = {t: {k: [] for k in names} for t in trial_ids}
    if not trial_ids:
        return out
    cols = [Curve.trial_id, *(getattr(Curve, k) for k in names)]
    for row in s.execute(select(*cols).where(Curve.trial_id.in_(
            bindparam("ids", expanding=True))).order_by(Curve.trial_id, Curve.epoch),
            {"ids": list(trial_ids)}):
        for k, v in zip(names, row[1:], strict=True):
            out[row[0]][k].append(v)
    return out


def trial_detail(s: Session, trial_id: int) -> dict[str, Any] | None:
    """One trial: its row, sweep and stage, parameters, curves and checkpoint list."""
    row = s.execute(select(Trial, Stage.idx, Sweep.name)
                    .join(Stage, Stage.id == Trial.stage_id)
                    .join(Sweep, Sweep.id == Trial.sweep_id)
                    .where(Trial.id == trial_id)).first()
    if row is None:
        return None
    t, stage_idx, sweep_name = row
    ckpts = s.execute(select(Checkpoint.kind, Checkpoint.epoch, Checkpoint.val_acc,
                             func.length(Checkpoint.data))  # the size, never the blob
                      .where(Checkpoint.trial_id == trial_id)
                      .order_by(Checkpoint.epoch, Checkpoint.kind)).all()
    return {
        "id": t.id, "sweep_id": t.sweep_id, "sweep": sweep_name, "stage": stage_idx,
        "idx": t.idx, "status": t.status, "seed": t.seed, "epochs": t.epochs,
        "best_val_acc": t.best_val_acc, "best_val_loss": t.best_val_loss,
        "best_epoch": t.best_epoch, "attempts": t.attempts, "worker": t.worker,
        "error": t.error, "parent_id": t.parent_id, "created_at": _iso(t.created_at),
        "started_at": _iso(t.started_at), "finished_at": _iso(t.finished_at),
        "params": params_of(s, [t.id])[t.id], "curves": curves(s, [t.id])[t.id],
        "checkpoints": [{"kind": k, "epoch": e, "val_acc": v, "bytes": n}
                        for k, e, v, n in ckpts],
    }
