"""stages.at_chance and stages.chance_acc (commit 983bf27).

Revision ID: 0003_stage_chance
Revises: 0002_meta
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.migrations.columns import add_missing_columns, drop_columns

revision = "0003_stage_chance"
down_revision = "0002_meta"
branch_labels = None
depends_on = None

COLUMNS = {"at_chance": sa.Boolean(), "chance_acc": sa.Float()}


def upgrade() -> None:
    add_missing_columns(op, "stages", COLUMNS)


def downgrade() -> None:
    drop_columns(op, "stages", COLUMNS)
