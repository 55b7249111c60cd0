"""Graph binding per user (``batch enroll --graph-bind`` with a database): the write-ahead
record and claim of each user's certificateUserIds write into Entra.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new table, nothing rewritten: existing users, keys and audit rows stay as they are.
    op.create_table(
        "graph_binds",
        sa.Column("upn_key", sa.String(320), sa.ForeignKey("users.upn_key"),
                  primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ids", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("patched", sa.Boolean, nullable=False),
        sa.Column("added", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("updated", sa.DateTime, nullable=False),
        sa.Column("desk", sa.String(100)),
        sa.Column("lease_until", sa.DateTime),
    )


def downgrade() -> None:
    op.drop_table("graph_binds")
