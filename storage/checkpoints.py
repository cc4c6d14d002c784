"""Checkpoint rows: the statements an epoch's write runs, and the readers.

A trial has one 'last' and one 'best' row (resumable), and with ``keep_snapshots``
its newest 'snapshot' rows. An improving epoch writes its bytes once: its 'last' row
stands for 'best' too until a later epoch replaces 'last' (the row is then renamed
'best', no bytes copied) or the trial finishes (``materialize_best`` copies it). The
hot paths run prebuilt Core statements (``cached_statement``), not ORM ones.
"""

from __future__ import annotations

from sqlalchemy import (
    Engine,
    Float,
    Insert,
    LargeBinary,
    Update,
    bindparam,
    delete,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.orm import Session

from storage.db import bind_of, cached_statement, upsert_statement
from storage.models import Checkpoint, Trial

_TRIALS = Trial.__table__
_CHECKPOINTS = Checkpoint.__table__
RESUMABLE = ("last", "best")


def write_epoch(s: Session, engine: Engine, trial_id: int, epoch: int, score: float | None,
                data: bytes, *, best_epoch: int | None, best_in_last: bool,
                previous_in_last: bool | None, keep_snapshots: int = 0) -> None:
    """The checkpoint rows of one epoch: 'last' becomes ``data``; with ``best_in_last``
    this epoch is the new best and 'last' stands for it (an older 'best' row goes);
    ``previous_in_last`` is the previous epoch's ``best_in_last`` in this attempt (None:
    unknown, e.g. the first epoch after a resume), so rows already in shape are left be."""
    if best_in_last and previous_in_last is not True:
        s.execute(cached_statement(engine, "checkpoint-drop", lambda: delete(_CHECKPOINTS).where(
            _CHECKPOINTS.c.trial_id == bindparam("p_trial"), _CHECKPOINTS.c.kind == "best")),
            {"p_trial": trial_id})
    elif not best_in_last and best_epoch is not None and previous_in_last is not False:
        s.execute(cached_statement(engine, "checkpoint-keep-best", _keep_best_statement),
                  {"p_trial": trial_id, "p_epoch": best_epoch})
    _replace(s, engine, trial_id, "last", epoch, score, data)
    if keep_snapshots > 0:
        row = {"trial_id": trial_id, "kind": "snapshot", "epoch": epoch, "val_acc": score,
               "data": data}
        s.execute(upsert_statement(engine, _CHECKPOINTS, ("trial_id", "kind", "epoch"),
                                   tuple(row)), row)
        s.execute(delete(Checkpoint).where(Checkpoint.trial_id == trial_id,
                                           Checkpoint.kind == "snapshot",
                                           Checkpoint.epoch <= epoch - keep_snapshots))


def materialize_best(s: Session, engine: Engine, trial_id: int) -> None:
    """A finishing trial whose best epoch is its last gets its 'best' row (a copy of
    'last'): a finished trial always has both."""
    s.execute(cached_statement(engine, "checkpoint-materialize-best",
                               _materialize_best_statement), {"p_trial": trial_id})


def resumable(s: Session, trial_id: int) -> list[tuple[str, int, bytes]]:
    """(kind, epoch, data) of a trial's resumable checkpoints, newest epoch first."""
    c = _CHECKPOINTS.c
    stmt = cached_statement(bind_of(s), "checkpoints", lambda: select(c.kind, c.epoch, c.data)
                            .where(c.trial_id == bindparam("p_trial"), c.kind.in_(RESUMABLE))
                            .order_by(c.epoch.desc(), c.kind.desc()))
    return [(kind, epoch, data) for kind, epoch, data in s.execute(stmt, {"p_trial": trial_id})]


def of_kind(s: Session, trial_id: int, kind: str = "best") -> list[tuple[int, bytes]]:
    """(epoch, data) of a trial's checkpoints of one kind, newest first."""
    rows = s.execute(select(Checkpoint.epoch, Checkpoint.data)
                     .where(Checkpoint.trial_id == trial_id, Checkpoint.kind == kind)
                     .order_by(Checkpoint.epoch.desc()))
    return [(e, d) for e, d in rows]


def _replace(s: Session, engine: Engine, trial_id: int, kind: str, epoch: int,
             val_acc: float | None, data: bytes) -> None:
    """The trial's one checkpoint of ``kind`` becomes ``data`` at ``epoch``: the row is
    updated in place (one statement), or inserted the first time."""
    args = {"p_trial": trial_id, "p_kind": kind, "p_epoch": epoch, "p_acc": val_acc,
            "p_data": data}
    res = s.execute(cached_statement(engine, "checkpoint-update", _checkpoint_update), args)
    if res.rowcount == 0:
        s.execute(cached_statement(engine, "checkpoint-insert", _checkpoint_insert), args)


def _keep_best_statement() -> Update:
    """Rename the 'last' row to 'best' when it holds the best epoch and no 'best' row
    exists (the deferred best of ``write_epoch``), before 'last' is replaced."""
    c, other = _CHECKPOINTS.c, _CHECKPOINTS.alias("best_checkpoint")
    has_best = select(other.c.epoch).where(other.c.trial_id == bindparam("p_trial"),
                                           other.c.kind == "best").exists()
    return (update(_CHECKPOINTS)
            .where(c.trial_id == bindparam("p_trial"), c.kind == "last",
                   c.epoch == bindparam("p_epoch"), ~has_best)
            .values(kind="best"))


def _materialize_best_statement() -> Insert:
    """Copy the 'last' row to 'best' when it holds the trial's best epoch and no 'best'
    row exists."""
    c, other, t = _CHECKPOINTS.c, _CHECKPOINTS.alias("best_checkpoint"), _TRIALS.c
    has_best = select(other.c.epoch).where(other.c.trial_id == bindparam("p_trial"),
                                           other.c.kind == "best").exists()
    best_epoch = select(t.best_epoch).where(t.id == bindparam("p_trial")).scalar_subquery()
    return insert(_CHECKPOINTS).from_select(
        ["trial_id", "kind", "epoch", "val_acc", "data"],
        select(c.trial_id, literal_column("'best'"), c.epoch, c.val_acc, c.data)
        .where(c.trial_id == bindparam("p_trial"), c.kind == "last", c.epoch == best_epoch,
               ~has_best))


def _checkpoint_update() -> Update:
    c = _CHECKPOINTS.c
    return (update(_CHECKPOINTS)
            .where(c.trial_id == bindparam("p_trial"), c.kind == bindparam("p_kind"))
            .values(epoch=bindparam("p_epoch"), val_acc=bindparam("p_acc", type_=Float),
                    data=bindparam("p_data", type_=LargeBinary)))


def _checkpoint_insert() -> Insert:
    return insert(_CHECKPOINTS).values(
        trial_id=bindparam("p_trial"), kind=bindparam("p_kind"), epoch=bindparam("p_epoch"),
        val_acc=bindparam("p_acc", type_=Float), data=bindparam("p_data", type_=LargeBinary))
