"""Baseline: the schema of hpsweep 302906a, the last release before Alembic.

Revision ID: 0001_baseline
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True)


def _created() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "datasets", _id(),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("n_rows", sa.Integer(), nullable=False),
        sa.Column("n_features", sa.Integer(), nullable=False),
        sa.Column("n_classes", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        _created())
    op.create_table(
        "sweeps", _id(),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("n_stages", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        _created(),
        sa.Column("finished_at", sa.DateTime()))
    op.create_table(
        "stages", _id(),
        sa.Column("sweep_id", sa.Integer(), sa.ForeignKey("sweeps.id"), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("quorum", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False, server_default="search"),
        _created(),
        sa.Column("finished_at", sa.DateTime()),
        sa.UniqueConstraint("sweep_id", "idx"))
    op.create_table(
        "stage_ranges",
        sa.Column("stage_id", sa.Integer(), sa.ForeignKey("stages.id"), primary_key=True),
        sa.Column("param", sa.String(100), primary_key=True),
        sa.Column("low", sa.Float()),
        sa.Column("high", sa.Float()),
        sa.Column("scale", sa.String(16), nullable=False),
        sa.Column("integer", sa.Boolean(), nullable=False),
        sa.Column("choices", sa.Text()))
    op.create_table(
        "trials", _id(),
        sa.Column("sweep_id", sa.Integer(), sa.ForeignKey("sweeps.id"), nullable=False),
        sa.Column("stage_id", sa.Integer(), sa.ForeignKey("stages.id"), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), sa.ForeignKey("trials.id")),
        sa.Column("best_val_acc", sa.Float()),
        sa.Column("best_val_loss", sa.Float()),
        sa.Column("best_epoch", sa.Integer()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(200)),
        sa.Column("error", sa.Text()),
        sa.Column("lease_token", sa.String(64)),
        sa.Column("lease_expires", sa.Float()),
        _created(),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("finished_at", sa.DateTime()),
        sa.UniqueConstraint("stage_id", "idx"))
    op.create_index("ix_trials_sweep_status_acc", "trials",
                    ["sweep_id", "status", "best_val_acc"])
    op.create_index("ix_trials_stage_status_acc", "trials",
                    ["stage_id", "status", "best_val_acc"])
    op.create_index("ix_trials_status_lease", "trials", ["status", "lease_expires"])
    op.create_table(
        "params",
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("trials.id"), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.Float()),
        sa.Column("value_text", sa.Text()))
    op.create_index("ix_params_name", "params", ["name", "value"])
    op.create_table(
        "curves",
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("trials.id"), primary_key=True),
        sa.Column("epoch", sa.Integer(), primary_key=True),
        *(sa.Column(name, sa.Float()) for name in (
            "train_loss", "train_acc", "val_loss", "val_acc", "ema_val_loss", "ema_val_acc")),
        sa.Column("lr", sa.Float(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False))
    op.create_table(
        "checkpoints",
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("trials.id"), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("epoch", sa.Integer(), primary_key=True),
        sa.Column("val_acc", sa.Float()),
        sa.Column("data", sa.LargeBinary(), nullable=False))
    op.create_table(
        "boundary_flags", _id(),
        sa.Column("sweep_id", sa.Integer(), sa.ForeignKey("sweeps.id"), nullable=False),
        sa.Column("stage_id", sa.Integer(), sa.ForeignKey("stages.id"), nullable=False),
        sa.Column("param", sa.String(100), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("at_limit", sa.Boolean(), nullable=False),
        sa.Column("scale", sa.String(16), nullable=False),
        sa.Column("hard_limit", sa.Text(), nullable=False),
        sa.UniqueConstraint("stage_id", "param"))
    op.create_table(
        "ensembles", _id(),
        sa.Column("sweep_id", sa.Integer(), sa.ForeignKey("sweeps.id"), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("members", sa.Text(), nullable=False),
        *(sa.Column(name, sa.Float()) for name in (
            "val_acc", "test_acc", "single_val_acc", "single_test_acc")),
        _created())


def downgrade() -> None:
    for table in ("ensembles", "boundary_flags", "checkpoints", "curves", "params", "trials",
                  "stage_ranges", "stages", "sweeps", "datasets"):
        op.drop_table(table)
