"""boundary_flags.reason: trend | edge | diverged (commit 983bf27).

Revision ID: 0004_flag_reason
Revises: 0003_stage_chance
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.migrations.columns import add_missing_columns, drop_columns

revision = "0004_flag_reason"
down_revision = "0003_stage_chance"
branch_labels = None
depends_on = None

COLUMNS = {"reason": sa.String(16)}


def upgrade() -> None:
    add_missing_columns(op, "boundary_flags", COLUMNS)


def downgrade() -> None:
    drop_columns(op, "boundary_flags", COLUMNS)
