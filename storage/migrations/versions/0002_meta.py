"""hpsweep_meta: the database's fingerprint (commit 6e9f35a).

Revision ID: 0002_meta
Revises: 0001_baseline
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002_meta"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database written between 6e9f35a and Alembic may have it already (stamped 0001)
    if not sa.inspect(op.get_bind()).has_table("hpsweep_meta"):
        meta = op.create_table(
            "hpsweep_meta",
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("value", sa.Text(), nullable=False))
        op.bulk_insert(meta, [{"key": "fingerprint", "value": uuid.uuid4().hex}])


def downgrade() -> None:
    op.drop_table("hpsweep_meta")
