"""Inventory: keys, certificates, escrow, meta and the append-only audit trail.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

APPEND_ONLY = "the audit trail is append-only"


def upgrade() -> None:
    op.create_table(
        "keys",
        sa.Column("serial", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("model", sa.String(100)),
        sa.Column("firmware", sa.String(20)),
        sa.Column("form_factor", sa.String(50)),
        sa.Column("owner_upn", sa.String(320)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("first_seen", sa.DateTime, nullable=False),
        sa.Column("last_seen", sa.DateTime, nullable=False),
        sa.Column("last_desk", sa.String(100)),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_keys_owner", "keys", ["owner_upn"])
    op.create_table(
        "certificates",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key_serial", sa.BigInteger, sa.ForeignKey("keys.serial"), nullable=False),
        sa.Column("slot", sa.String(4), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(80)),
        sa.Column("subject", sa.Text),
        sa.Column("issuer", sa.Text),
        sa.Column("not_before", sa.DateTime),
        sa.Column("not_after", sa.DateTime),
        sa.Column("certificate_user_ids", sa.JSON),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("pem", sa.Text),
        sa.Column("recorded", sa.DateTime, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
        sa.UniqueConstraint("key_serial", "slot", "fingerprint",
                            name="uq_certificates_slot_fp"),
    )
    op.create_table(
        "escrow",
        sa.Column("serial", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("upn", sa.String(320)),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
    )
    op.create_table(
        "meta",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime, nullable=False),
        sa.Column("desk", sa.String(100)),
        sa.Column("operator", sa.String(100)),
        sa.Column("command", sa.String(100)),
        sa.Column("reader", sa.String(200)),
        sa.Column("serial", sa.BigInteger),
        sa.Column("upn", sa.String(320)),
        sa.Column("step", sa.String(100), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("fingerprint", sa.String(64)),
    )
    op.create_index("ix_audit_serial", "audit", ["serial"])
    op.create_index("ix_audit_upn", "audit", ["upn"])
    # Append-only in the database itself, not only by convention in pivtool: a trigger
    # refuses UPDATE, DELETE (and on PostgreSQL TRUNCATE) whoever runs them.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION pivtool_audit_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$""")
        op.execute("CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
                   "FOR EACH ROW EXECUTE FUNCTION pivtool_audit_append_only()")
        op.execute("CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit "
                   "FOR EACH STATEMENT EXECUTE FUNCTION pivtool_audit_append_only()")
    else:
        for what in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_no_{what.lower()} BEFORE {what} ON audit "
                       f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE audit")
        op.execute("DROP FUNCTION pivtool_audit_append_only()")
    else:
        op.drop_table("audit")
    for table in ("meta", "escrow", "certificates", "keys"):
        op.drop_table(table)
