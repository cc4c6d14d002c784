"""SQLAlchemy 2 models: one row per thing, the tables of DESIGN.md.

Users query these tables directly, so names follow the public contract; extra
columns (leases, EMA metrics) sit beside the documented ones. Every change to a table here
needs a revision in storage/migrations/versions (tests/storage_tests/test_migrations.py
checks that the revisions and these models give the same schema).
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class TrialStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DIVERGED = "diverged"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # stopped early by its stage's ``prune`` rule: behind the stage's earlier trials at the
    # same epoch (its curve and checkpoints are kept; ranked after every done trial)
    PRUNED = "pruned"


FINAL_TRIAL_STATUSES = (
    TrialStatus.DONE.value,
    TrialStatus.PRUNED.value,
    TrialStatus.DIVERGED.value,
    TrialStatus.FAILED.value,
    TrialStatus.CANCELLED.value,
)


class SweepStatus(str, Enum):
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class StageStatus(str, Enum):
    LAUNCHING = "launching"  # stage 0 of a big launch: trials still being written
    RUNNING = "running"
    ADVANCED = "advanced"  # next stage planned from the quorum; stragglers still running
    DONE = "done"
    CANCELLED = "cancelled"


class StageKind(str, Enum):
    SEARCH = "search"  # a stage of the coarse-to-fine search
    SEEDS = "seeds"  # the best configuration retrained with new seeds (ensembles)


class Base(DeclarativeBase):
    pass


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(Text)
    n_rows: Mapped[int]
    n_features: Mapped[int]
    n_classes: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())


class Sweep(Base):
    __tablename__ = "sweeps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=SweepStatus.RUNNING.value)
    config: Mapped[str] = mapped_column(Text)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    seed: Mapped[int]
    queue: Mapped[str] = mapped_column(String(200))
    n_stages: Mapped[int]
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class Stage(Base):
    __tablename__ = "stages"
    __table_args__ = (UniqueConstraint("sweep_id", "idx"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id"))
    idx: Mapped[int]
    epochs: Mapped[int]
    n_trials: Mapped[int]
    # The next stage is planned once trials with idx < quorum have all finished.
    quorum: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=StageStatus.RUNNING.value)
    # 'seeds' stages run after the search, even on a finished sweep, and never advance it
    kind: Mapped[str] = mapped_column(String(16), default=StageKind.SEARCH.value,
                                      server_default=StageKind.SEARCH.value)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # set when the stage is ranked: did any trial beat chance (chance_acc, the accuracy a
    # trial must exceed: one class of n_classes plus 3 binomial sds on the validation rows)
    at_chance: Mapped[bool | None] = mapped_column(Boolean)
    chance_acc: Mapped[float | None] = mapped_column(Float)


class StageRange(Base):
    __tablename__ = "stage_ranges"
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"), primary_key=True)
    param: Mapped[str] = mapped_column(String(100), primary_key=True)
    low: Mapped[float | None] = mapped_column(Float)
    high: Mapped[float | None] = mapped_column(Float)
    scale: Mapped[str] = mapped_column(String(16))  # linear | log | choice
    integer: Mapped[bool] = mapped_column(Boolean, default=False)
    choices: Mapped[str | None] = mapped_column(Text)  # JSON list for scale 'choice'


class Trial(Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("stage_id", "idx"),
        # status counts, and the best trials of a sweep or a stage read in index order
        # (reports on a sweep of 50,000 trials touch a handful of rows)
        Index("ix_trials_sweep_status_acc", "sweep_id", "status", "best_val_acc"),
        Index("ix_trials_stage_status_acc", "stage_id", "status", "best_val_acc"),
        Index("ix_trials_status_lease", "status", "lease_expires"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id"))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    idx: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default=TrialStatus.QUEUED.value)
    seed: Mapped[int]
    epochs: Mapped[int]
    # Carried from an earlier stage: resume from that trial's checkpoint.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id"))
    best_val_acc: Mapped[float | None] = mapped_column(Float)
    best_val_loss: Mapped[float | None] = mapped_column(Float)
    best_epoch: Mapped[int | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires: Mapped[float | None] = mapped_column(Float)  # database clock, epoch s
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class Param(Base):
    __tablename__ = "params"
    __table_args__ = (Index("ix_params_name", "name", "value"),)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)
    value_text: Mapped[str | None] = mapped_column(Text)


class Curve(Base):
    __tablename__ = "curves"
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_loss: Mapped[float | None] = mapped_column(Float)
    train_acc: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_acc: Mapped[float | None] = mapped_column(Float)
    ema_val_loss: Mapped[float | None] = mapped_column(Float)
    ema_val_acc: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # last | best | snapshot
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    val_acc: Mapped[float | None] = mapped_column(Float)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class BoundaryFlag(Base):
    __tablename__ = "boundary_flags"
    __table_args__ = (UniqueConstraint("stage_id", "param"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id"))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    param: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    low: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)
    side: Mapped[str] = mapped_column(String(8))  # low | high
    at_limit: Mapped[bool] = mapped_column(Boolean, default=False)
    scale: Mapped[str] = mapped_column(String(16), default="linear")  # linear | log
    hard_limit: Mapped[str] = mapped_column(Text, default="")  # described, when at_limit
    reason: Mapped[str | None] = mapped_column(String(16))  # trend | edge | diverged


class Ensemble(Base):
    __tablename__ = "ensembles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id"))
    method: Mapped[str] = mapped_column(String(32))
    members: Mapped[str] = mapped_column(Text)  # JSON list of trial ids (and epochs)
    val_acc: Mapped[float | None] = mapped_column(Float)
    test_acc: Mapped[float | None] = mapped_column(Float)
    single_val_acc: Mapped[float | None] = mapped_column(Float)
    single_test_acc: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())


class Meta(Base):
    """Facts about the database itself, one row per key; ``fingerprint`` (a uuid4 hex given
    when the schema is created) names the database in every job (DESIGN principle 7)."""

    __tablename__ = "hpsweep_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
