"""Fleet: the shared roster, with each user's claim (desk, reader, key, lease) in its row.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("upn", sa.String(320), nullable=False),
        sa.Column("upn_key", sa.String(320), nullable=False, unique=True),
        sa.Column("roster", sa.Text),
        sa.Column("row", sa.Integer),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("in_roster", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("pinned_serial", sa.BigInteger),
        sa.Column("serial", sa.BigInteger),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_step", sa.String(100)),
        sa.Column("error", sa.Text),
        sa.Column("started", sa.DateTime),
        sa.Column("finished", sa.DateTime),
        sa.Column("certificate", sa.JSON),
        sa.Column("certificate_user_ids", sa.JSON),
        sa.Column("pin_letter", sa.Text),
        sa.Column("history", sa.JSON),
        sa.Column("updated", sa.DateTime),
        sa.Column("claim_desk", sa.String(100)),
        sa.Column("claim_reader", sa.String(200)),
        sa.Column("claimed", sa.DateTime),
        sa.Column("heartbeat", sa.DateTime),
        sa.Column("lease_until", sa.DateTime),
    )
    op.create_index("ix_users_claim", "users", ["status", "pinned_serial", "row"])
    op.create_index("ix_users_serial", "users", ["serial"])
    # Who is working on whom, for people and reports (pivtool reads the users table).
    op.execute("CREATE VIEW claims AS SELECT upn, serial, claim_desk AS desk, "
               "claim_reader AS reader, claimed, heartbeat, lease_until "
               "FROM users WHERE status = 'enrolling'")


def downgrade() -> None:
    op.execute("DROP VIEW claims")
    op.drop_table("users")
